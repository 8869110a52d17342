"""Export of trained sparse models: stripped serving SavedModels and TFLite."""
