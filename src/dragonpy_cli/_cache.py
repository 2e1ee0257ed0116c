"""``dragonpy cache``: see and manage the piece store."""

from __future__ import annotations

import json
import time
from pathlib import Path

import attrs
import click

from ._common import open_cli_store, reports_errors, store_options


@click.group()
def cache() -> None:
    """See and manage the local piece store."""


@cache.command("ls")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per task.")
@store_options
@reports_errors
def list_tasks(as_json: bool, store_dir: Path, store_capacity: str) -> None:
    """List stored tasks, most recently used first."""
    store = open_cli_store(store_dir, store_capacity)
    tasks = sorted(store.list_tasks(), key=lambda task: task.last_access, reverse=True)
    if as_json:
        for task in tasks:
            click.echo(json.dumps(attrs.asdict(task)))
        return

    click.echo(f"{'TASK ID':<64}  {'STORED':>12}  {'SIZE':>12}  STATE     USED  URL")
    for task in tasks:
        record = task.task
        state = "complete" if record.complete else "partial "
        used = time.strftime("%m-%d %H:%M", time.localtime(task.last_access))
        click.echo(
            f"{record.id:<64}  {task.stored_bytes:>12}  {record.content_length:>12}  "
            f"{state}  {used}  {record.url}"
        )


@cache.command("rm")
@click.argument("task_ids", nargs=-1)
@click.option("--all", "remove_all", is_flag=True, help="Remove every task.")
@store_options
@reports_errors
def remove(
    task_ids: tuple[str, ...], remove_all: bool, store_dir: Path, store_capacity: str
) -> None:
    """Remove tasks (by ID, as ``cache ls`` shows them) and their pieces."""
    store = open_cli_store(store_dir, store_capacity)
    if remove_all:
        task_ids = tuple(task.task.id for task in store.list_tasks())
    elif not task_ids:
        raise click.UsageError("name the task IDs to remove, or pass --all")

    missing = [task_id for task_id in task_ids if not store.remove_task(task_id)]
    if missing:
        raise click.ClickException(f"not in the store: {', '.join(missing)}")


@cache.command("stat")
@click.option("--json", "as_json", is_flag=True)
@store_options
@reports_errors
def statistics(as_json: bool, store_dir: Path, store_capacity: str) -> None:
    """Show how full the store is."""
    stats = attrs.asdict(open_cli_store(store_dir, store_capacity).statistics())
    # The eviction counters count what one process evicted: nothing, for this one.
    shown = {name: stats[name] for name in _STORE_WIDE}
    if as_json:
        click.echo(json.dumps(shown))
        return
    for name, value in shown.items():
        click.echo(f"{name:<15} {value}")


_STORE_WIDE = (
    "path",
    "capacity",
    "used_bytes",
    "tasks",
    "high_watermark",
    "low_watermark",
)


@cache.command("gc")
@store_options
@reports_errors
def collect_garbage(store_dir: Path, store_capacity: str) -> None:
    """Remove expired tasks, then evict down to the low watermark if needed."""
    removed = open_cli_store(store_dir, store_capacity).collect_garbage()
    for task_id in removed:
        click.echo(task_id)
