"""JS-cron: apps wake up on a schedule, exactly once per slot.

- `schedule.py` parses `every N s|m|h|d [aligned]`, cron expressions and
  durations, and turns a schedule into slots (due instants, in ms).
- `store.py` keeps the state in the cartridge: entries, runs (claims by
  compare-and-set), history.
- `scheduler.py` is the service: one per host process, it sleeps until the
  next due time, claims slots and runs them in fresh sandboxes.
- `commands.py` is `fazt-host cron ...`.

This package's `__init__` imports nothing, so `config.py` can use the schedule
parser without pulling in the runtime.
"""
