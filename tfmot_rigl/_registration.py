"""Registers the sparse experiments with Model Garden when Model Garden's experiment factory is imported.

Model Garden projects register experiments by importing a registry module (`tfmot_rigl.modelgarden`, like Model
Garden's own `official.vision.registry_imports`). Users who `import tfmot_rigl` and then use Model Garden expect the
experiments to be there as well, yet users who never touch Model Garden must not pay for importing it (TensorFlow
and Model Garden take seconds). So `import tfmot_rigl` only installs an import hook: once
`official.core.exp_factory` has been imported, its registry of experiment configs imports `tfmot_rigl.modelgarden`
(which registers `resnet_rigl`, `mobilenet_rigl`, `wrn_cifar10_rigl` and `mnist_rigl`) the first time it is asked
for a name it does not hold. Registering at lookup, not at the factory's import, keeps clear of circular imports:
Model Garden's own modules import the factory halfway through their own imports — and while any Model Garden module
is still being imported, a miss (its own registrations check each name first) waits for the next one.
"""
import importlib
import importlib.machinery
import sys

FACTORY = "official.core.exp_factory"
REGISTRY = "tfmot_rigl.modelgarden"


def _register():
  try:
    importlib.import_module(REGISTRY)
  except Exception as error:  # the user's own import of Model Garden must not fail because of this plugin
    print(f"tfmot_rigl: the sparse experiments were not registered with Model Garden ({type(error).__name__}: "
          f"{error}); import {REGISTRY} to register them.", file=sys.stderr)


def _model_garden_importing() -> bool:
  """Whether an `official.*` module is executing its import right now (importlib marks its spec `_initializing`)."""
  return any(getattr(getattr(module, "__spec__", None), "_initializing", False)
             for name, module in list(sys.modules.items()) if name.startswith("official."))


class _RegistersOnFirstMiss(dict):
  """Model Garden's experiment registry (a dict), importing our registry module at the first unknown name."""

  _importing = False

  def __contains__(self, name):
    if (not dict.__contains__(self, name) and not _RegistersOnFirstMiss._importing and REGISTRY not in sys.modules
        and not _model_garden_importing()):
      _RegistersOnFirstMiss._importing = True
      try:
        _register()
      finally:
        _RegistersOnFirstMiss._importing = False
    return dict.__contains__(self, name)


def _make_lazy(exp_factory_module):
  configs = exp_factory_module._REGISTERED_CONFIGS
  if not isinstance(configs, _RegistersOnFirstMiss):
    exp_factory_module._REGISTERED_CONFIGS = _RegistersOnFirstMiss(configs)


class _AfterExpFactory:  # a meta path finder (importlib.abc, not imported: it costs more than this package)
  """Finds `official.core.exp_factory` as the path finder would, and makes its registry lazy once executed."""

  def find_spec(self, fullname, path, target=None):
    if fullname != FACTORY:
      return None
    spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
    if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
      return None
    uninstall()
    execute = spec.loader.exec_module

    def exec_module(module):
      execute(module)
      _make_lazy(module)

    spec.loader.exec_module = exec_module
    return spec


_HOOK = _AfterExpFactory()


def install():
  if FACTORY in sys.modules:
    _make_lazy(sys.modules[FACTORY])
  elif _HOOK not in sys.meta_path:
    sys.meta_path.insert(0, _HOOK)


def uninstall():
  if _HOOK in sys.meta_path:
    sys.meta_path.remove(_HOOK)
