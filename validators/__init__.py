"""Validators: pure, incremental checks over streamed text.

- validators/base.py: the one small interface every validator implements;
- validators/checkpoints.py: the splitter that cuts a token stream into checkpoints;
- validators/registry.py: validators by name (built-in, entry point or dotted path);
- validators/builtin/: the built-in validators, one module each;
- validators/lib/: the text machinery they share (answers, exact arithmetic, JSON prefixes);
- validators/defaults.py: the default set for a solve stage.

Nothing here does I/O or imports tasks, flows or Prefect: a validator author needs only this
package.
"""
