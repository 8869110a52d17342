"""Export of trained sparse models: stripped serving SavedModels (`tfm export`) and TFLite files (`tfm tflite`)."""
from tfmot_rigl.export.saved_model import (ExportError, SparseClassificationModule, export_saved_model,
                                           load_trained_model, strip_for_serving)
from tfmot_rigl.export.tflite import OutputMismatchError, TfliteError, TfliteResult, export_tflite, make_interpreter
