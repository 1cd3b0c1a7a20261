"""What a run's kernel launches will cost a GPU in compiles and autotuning, counted on the CPU.

A GPU run's first minutes go to Triton: each new autotune key (the ``key`` arguments plus
every tensor's dtype) times each of the configs tried, and each new specialisation of a
kernel (constexpr values; ints equal to 1 or divisible by 16; 16-byte-aligned pointers)
compiles once more. Both follow from the launch arguments alone, so replaying a run's
launches with :func:`record_launches` (under the interpreter, or without executing the
kernels at all) predicts them. A test caps the predictions, so a change that multiplies
compiles fails on the CPU, not on a lent GPU.

    with record_launches(execute=False) as launches:  # kernels skipped: shapes only
        one_training_step(model)
    print(launches.summary())  # {"sessions": 21, "compiles": 48, ...}

The rules are Triton 3.x's (``triton.runtime.autotuner.Autotuner.run`` and
``triton.runtime.jit`` specialisation). What they leave out: a config that fails to compile
is skipped, and the on-disk caches (compiled binaries always, autotune timings with
``TRITON_CACHE_AUTOTUNING=1``) make a second process's counts lower; these are the counts
of one process on empty caches.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from automoe.errors import ConfigError

# Environment switch: autotune over only the first N configs (e.g. 2 for tests and short
# GPU checks, where compile time would exceed the run); unset = all of them.
CONFIGS_ENV = "AUTOMOE_TRITON_CONFIGS"


def configs_in_use(available: int) -> int:
    """How many of ``available`` autotune configs a launch tries, after the switch."""
    raw = os.environ.get(CONFIGS_ENV, "").strip()
    if not raw:
        return available
    try:
        wanted = int(raw)
    except ValueError:
        raise ConfigError(f"{CONFIGS_ENV} must be a whole number of configs, got {raw!r}") \
            from None
    if wanted < 1:
        raise ConfigError(f"{CONFIGS_ENV} must be at least 1, got {wanted}")
    return min(wanted, available)


def _int_specialisation(value: int, specialise: bool) -> str:
    # Triton picks i32 or i64 by range even where it does not specialise the value
    width = "i64" if not -2**31 <= value < 2**31 else "i32"
    if not specialise:
        return width
    if value == 1:
        return "1"
    return f"{width}:16" if value % 16 == 0 else width


def _arg_specialisation(value, specialise: bool):
    if isinstance(value, torch.Tensor):
        return (str(value.dtype), value.data_ptr() % 16 == 0)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return _int_specialisation(value, specialise)
    return type(value).__name__


@dataclass
class LaunchRecord:
    """The distinct autotune keys and specialisations of the launches seen so far."""

    configs: int | None = None  # configs per autotune session; None: what the kernel tries
    execute: bool = True  # run the kernels (False: record their arguments only)
    launches: int = 0
    sessions: dict = field(default_factory=dict)  # (kernel, autotune key) -> configs tried
    specialisations: set = field(default_factory=set)  # (kernel, key, specialisation)

    def add(self, kernel: str, arg_names: Sequence[str], args: Sequence, constexprs: dict,
            tune_key: Sequence[str], not_specialised: Sequence[str], configs: int) -> None:
        named = dict(zip(arg_names, args, strict=False))  # the constexprs come as keywords
        not_specialised = {arg_names[n] if isinstance(n, int) else n for n in not_specialised}
        everything = {**named, **constexprs}
        key = tuple(everything[name] for name in tune_key) + tuple(
            str(value.dtype) for value in named.values() if isinstance(value, torch.Tensor))
        signature = tuple(_arg_specialisation(value, name not in not_specialised)
                          for name, value in named.items())
        self.launches += 1
        self.sessions.setdefault((kernel, key), configs if self.configs is None
                                 else self.configs)
        self.specialisations.add((kernel, key, signature, tuple(sorted(constexprs.items()))))

    @property
    def compiles(self) -> int:
        """Configs benchmarked per session (one compile each; no benchmark with one
        config), then one compile of the chosen config per further specialisation."""
        return sum(self.sessions.values()) + len(self.specialisations) - len(self.sessions)

    def summary(self) -> dict[str, int]:
        return {"launches": self.launches, "sessions": len(self.sessions),
                "specialisations": len(self.specialisations), "compiles": self.compiles}


_ACTIVE: list[LaunchRecord] = []


def active_record() -> LaunchRecord | None:
    """The innermost :func:`record_launches` in effect, if any."""
    return _ACTIVE[-1] if _ACTIVE else None


def note_launch(kernel, args: Sequence, constexprs: dict, tune_key: Sequence[str],
                unspecialised: dict[str, Sequence[str]], configs: int) -> bool:
    """Add a launch of ``kernel`` (jitted, interpreted or autotuned) to the active record,
    with ``unspecialised[name]`` its ``do_not_specialize`` arguments (the interpreter keeps
    no such list); whether to execute it (True outside a record)."""
    record = active_record()
    if record is None:
        return True
    jitted = kernel
    while hasattr(getattr(jitted, "fn", None), "arg_names"):  # the autotuner wraps it
        jitted = jitted.fn
    name = jitted.fn.__name__
    record.add(name, jitted.arg_names, args, constexprs, tune_key, unspecialised.get(name, ()),
               configs)
    return record.execute


@contextmanager
def record_launches(configs: int | None = None, execute: bool = True
                    ) -> Iterator[LaunchRecord]:
    """Record every kernel launch inside the block (see the module).

    Args:
        configs: configs per autotune session to count with (default: what each kernel
            would try on CUDA now, :data:`CONFIGS_ENV` applied).
        execute: False skips the kernels and leaves their outputs zero, so a full-size
            model's launches replay on the CPU in seconds; the numbers it computes are then
            meaningless, and only the record counts.
    """
    record = LaunchRecord(configs=configs, execute=execute)
    _ACTIVE.append(record)
    try:
        yield record
    finally:
        _ACTIVE.remove(record)
