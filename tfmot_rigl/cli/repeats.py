"""Refusing what is given twice: a flag repeated with another value, a key repeated in one YAML mapping.

absl keeps the last of `--model_dir=a --model_dir=b`, and YAML the last of `{a: 1, a: 2}`: the first value is lost
without a word, although either may be the one the user meant. These checks name both values instead. Flags that
take several values (`--config_file`, applied in order) may repeat; repeating a flag or key with the same value is
harmless. Keys may of course differ between sources: a --params_override is meant to override a --config_file.
"""
import argparse
from typing import Any, Iterator, Optional, Sequence, Tuple

import yaml

from tfmot_rigl.cli import UsageError


def _flag_uses(argv: Sequence[str], flags_obj) -> Iterator[Tuple[str, str]]:
  """(flag name, value as given) of each flag in argv, in order; booleans as 'true' / 'false'."""
  args = list(argv)
  i = 0
  while i < len(args):
    arg = args[i]
    i += 1
    if arg == '--':
      return
    if not arg.startswith('-') or arg == '-':
      continue
    name, has_value, value = arg.lstrip('-').partition('=')
    if name not in flags_obj and name.startswith('no') and name[2:] in flags_obj:
      if flags_obj[name[2:]].boolean:
        yield name[2:], 'false'
      continue
    if name not in flags_obj:
      continue  # absl reports it
    if flags_obj[name].boolean and not has_value:
      yield name, 'true'
      continue
    if not has_value and i < len(args):
      value = args[i]
      i += 1
    yield name, value


def check_repeated_flags(argv: Sequence[str], flags_obj) -> None:
  """UsageError naming both values when a single-valued flag is given twice with different values."""
  from absl import flags
  seen = {}
  for name, value in _flag_uses(argv, flags_obj):
    if isinstance(flags_obj[name], flags.MultiFlag):
      continue
    if name in seen and seen[name] != value:
      hint = ('; put all overrides in one comma-separated --params_override (or a --config_file)'
              if name == 'params_override' else '; give it once')
      raise UsageError(f'--{name} is given twice, as {seen[name]!r} and as {value!r}: only one would be used{hint}.')
    seen.setdefault(name, value)


def _text_of(node: yaml.Node) -> str:
  if isinstance(node, yaml.ScalarNode):
    return node.value
  if isinstance(node, yaml.SequenceNode):
    return '[' + ', '.join(_text_of(item) for item in node.value) + ']'
  return '{' + ', '.join(f'{_text_of(k)}: {_text_of(v)}' for k, v in node.value) + '}'


def _duplicate_in(node: yaml.Node, path: str = '') -> Optional[Tuple[str, str, str]]:
  if isinstance(node, yaml.SequenceNode):
    return next(filter(None, (_duplicate_in(item, path) for item in node.value)), None)
  if not isinstance(node, yaml.MappingNode):
    return None
  seen = {}
  for key_node, value_node in node.value:
    if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == 'tag:yaml.org,2002:merge':
      continue
    key = f'{path}{key_node.value}'
    if key in seen and _text_of(seen[key]) != _text_of(value_node):
      return key, _text_of(seen[key]), _text_of(value_node)
    seen[key] = value_node
    found = _duplicate_in(value_node, key + '.')
    if found:
      return found
  return None


def duplicate_key(text: str) -> Optional[Tuple[str, str, str]]:
  """(dotted key, first value, second value) of the first key repeated with another value in one YAML mapping.

  Text that is not YAML gives None: the config checks report it with their own message.
  """
  try:
    node = yaml.compose(text, Loader=yaml.SafeLoader)
  except yaml.YAMLError:
    return None
  return _duplicate_in(node) if node is not None else None


def _override_text(override: str) -> Any:
  import os
  from official.modeling.hyperparams import params_dict
  if os.path.isfile(override):
    with open(override) as f:
      return f.read()
  try:
    return params_dict.nested_csv_str_to_json_str(override)
  except ValueError:
    return override


def check_duplicate_keys(config_files: Sequence[str], params_override) -> None:
  """UsageError naming the key and both values when a --config_file or --params_override repeats a key."""
  sources = []
  for path in config_files or []:
    try:
      with open(path) as f:
        sources.append((f'--config_file {path}', f.read()))
    except (OSError, UnicodeDecodeError):
      continue  # reported by the config checks
  overrides = [params_override] if isinstance(params_override, str) else list(params_override or [])
  sources += [('--params_override', _override_text(override)) for override in overrides if override]
  for flag, text in sources:
    found = duplicate_key(text)
    if found:
      key, first, second = found
      raise UsageError(f'{flag} gives {key} twice, as {first} and as {second}: only the last would be used; keep '
                       'the one you mean.')


class StoreOnce(argparse.Action):
  """argparse's `store` for the argparse-based commands (`tfm plot`), refusing a second, different value."""

  def __call__(self, parser, namespace, values, option_string=None):
    given = f'_{self.dest}_given'
    if getattr(namespace, given, False) and getattr(namespace, self.dest) != values:
      raise UsageError(f'{option_string} is given twice, as {getattr(namespace, self.dest)!r} and as {values!r}: '
                       'only one would be used; give it once.')
    setattr(namespace, given, True)
    setattr(namespace, self.dest, values)
