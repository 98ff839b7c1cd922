"""``eical flash | info | read-table | rollback | devices | board-emulator | nvm``: a dev board, through
``firmware_bridge`` (esptool style).

Each handler calls the bridge, prints one result (or one ``--json`` object on stdout), and turns a bridge error into
its exit code from the one table (:mod:`.exits`) with one error line on stderr that says which table the board runs
now (docs/protocol.md section 8).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

from .argtypes import add_seed_argument
from .exits import MEANING, ExitCode, exit_code_for

__all__ = ["add_subcommands"]

BOARD_CODES = (ExitCode.OK, ExitCode.USAGE, ExitCode.IDENTITY, ExitCode.LINK_LOST, ExitCode.VERIFY, ExitCode.BOARD,
               ExitCode.INTERRUPTED)
EPILOG = "exit codes: " + "; ".join(f"{int(c)} {MEANING[c].split(':')[0]}" for c in BOARD_CODES)
# a command that writes nothing to the board can only fail on its input, its link or the board's answer
READ_EPILOG = "exit codes: " + "; ".join(f"{int(c)} {MEANING[c].split(':')[0]}" for c in (
    ExitCode.OK, ExitCode.USAGE, ExitCode.LINK_LOST, ExitCode.BOARD, ExitCode.INTERRUPTED))


def _fail(e: Any, cmd: str, as_json: bool) -> int:
    """One error line (and with ``--json`` one JSON object); the exit code of the error's kind."""
    code = exit_code_for(e) or ExitCode.BOARD
    print(f"eical: error: {e.line()}", file=sys.stderr)  # the one prefix of every command (cli/exits.py)
    if as_json:
        print(json.dumps({"ok": False, "exit_code": int(code), "error": e.message, "board_table": e.board_table}))
    return code


class _Progress:
    """The flash's progress bar on stderr (``rich``), only when stderr is a terminal: bytes written of the table,
    rate and time left while writing, then the stage (verify, commit, read-back)."""

    STAGES = {"hello": "identity", "begin": "erasing", "data": "writing", "verify": "verifying",
              "commit-send": "committing", "commit": "committed", "readback": "reading back"}

    def __init__(self, stream: Any):
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        self.bar = Progress(TextColumn("{task.description:<12}"), BarColumn(), DownloadColumn(binary_units=True),
                            TransferSpeedColumn(), TimeRemainingColumn(),
                            console=Console(file=stream, force_terminal=True), transient=True)
        self.task = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.task is None:
            if stage not in ("begin", "data"):
                return  # nothing to show until the board starts writing (an up-to-date table writes nothing)
            self.bar.start()
            self.task = self.bar.add_task("erasing", total=max(total, 1))
        desc = self.STAGES.get(stage, stage)
        changed = desc != self.bar.tasks[0].description
        self.bar.update(self.task, description=desc, completed=done, total=max(total, 1) if total else None)
        if changed:
            self.bar.refresh()  # every stage is seen, however fast a small table goes

    def finish(self) -> None:
        if self.task is not None:
            self.bar.stop()
            self.task = None


class _Stage:
    """Remembers how far a flash got (for an interrupted one), and forwards to the progress display."""

    def __init__(self, progress: Optional[_Progress]):
        self.stage = "start"
        self.progress = progress

    def __call__(self, stage: str, done: int, total: int) -> None:
        self.stage = stage
        if self.progress:
            self.progress(stage, done, total)

    def interrupted(self) -> str:
        if self.stage == "commit-send":
            return "interrupted during COMMIT: the board runs either its old table or the new one (see `eical info`)"
        if self.stage in ("commit", "readback"):
            return "interrupted after COMMIT: the board runs the new table"
        return (f"interrupted ({self.stage}): nothing was committed, the board runs the table it ran before; "
                "re-run to flash")


def _cmd_flash(args: argparse.Namespace) -> int:
    from firmware_bridge.errors import BridgeError
    from firmware_bridge.flash import TableImage, flash_table
    from firmware_bridge.host import open_client

    progress = _Progress(sys.stderr) if sys.stderr.isatty() and not args.json else None
    stage = _Stage(progress)
    client = None
    try:
        image = TableImage.load(args.table)
        refused = _failed_verdict(args.table, args.force)
        if refused:
            print(f"eical: error: {refused}", file=sys.stderr)
            return ExitCode.FAILED
        client = open_client(args.port, args.baud)
        report = flash_table(client, image, dry_run=args.dry_run, force=args.force, readback=not args.no_readback,
                             on_event=stage)
    except BridgeError as e:
        return _fail(e, "flash", args.json)
    except KeyboardInterrupt:
        if progress:
            progress.finish()
        print(f"eical: {stage.interrupted()}", file=sys.stderr)
        return ExitCode.INTERRUPTED
    finally:
        if progress:
            progress.finish()
        if client is not None:
            client.close()
    if args.json:
        print(json.dumps(dict(report.to_dict(), ok=True, exit_code=int(ExitCode.OK))))
    else:
        print(report.summary())
    return ExitCode.OK


def _failed_verdict(path: str, force: bool) -> Optional[str]:
    """The line refusing a table whose verdict failed (calibrate.verdict), unless ``--force``; None to go on."""
    from hw_models.table import GainTable

    from ..verdict import describe

    table = GainTable.load(path)
    if force or not table.verdict_failed:
        return None
    v = table.verdict
    why = "its calibration was interrupted" if not v["complete"] else \
        "its calibration did not meet the spec: " + "; ".join(describe(c) for c in v["criteria"] if not c["met"])
    return f"{path}: not flashed: {why}; nothing was written (--force flashes it anyway)"


def _hello_lines(h: Any) -> list[str]:
    knobs = ", ".join(f"{k.name} ({k.bits}-bit {k.dac} per {k.sharing}, {k.n_groups} codes, ref {k.code_ref})"
                      for k in h.knobs)
    return [
        f"board      {h.uid}",
        f"firmware   {h.firmware} (protocol {h.proto})",
        f"profile    {h.profile} (sha256 {h.profile_sha256[:16]}...)",
        f"chip       {h.n_neurons} neurons, {h.n_cores} core{'s' if h.n_cores != 1 else ''}, {h.model}, dt {h.dt_ms} ms, speed-up {h.speedup:g}",
        f"knobs      {knobs}",
        f"table      {h.table_desc()}",
        f"boots      {h.boot_count}",
        f"nvm        2 banks x {h.bank_size // 1024} KiB, max payload {h.max_payload} B",
    ]


def _cmd_info(args: argparse.Namespace) -> int:
    from firmware_bridge.errors import BridgeError, LinkLost
    from firmware_bridge.host import open_client

    client = None
    try:
        client = open_client(args.port, args.baud)
        try:
            h = client.hello()
        except LinkLost as e:
            e.board_table = e.board_table or "an unknown table (the board did not answer HELLO)"
            raise
        previous = _previous_line(client, h)
    except BridgeError as e:
        return _fail(e, "info", args.json)
    finally:
        if client is not None:
            client.close()
    if args.json:
        print(json.dumps(dict(h.to_dict(), port=args.port, rollback=previous)))
    else:
        print(f"port       {args.port}")
        print("\n".join(_hello_lines(h)))
        print(f"rollback   {previous['text']}")
    return ExitCode.OK


def _previous_line(client: Any, h: Any) -> dict:
    """What ``eical rollback`` would do on this board: ``{"possible", "table", "text"}`` (for ``info``)."""
    from firmware_bridge.errors import BoardError
    from firmware_bridge.tables import previous_table

    if not h.has_table:
        return {"possible": False, "table": None, "text": "not possible: the board has no table"}
    try:
        prev = previous_table(client)
    except BoardError as e:
        return {"possible": False, "table": None, "text": f"unknown: {e.message}"}
    if prev is None:
        return {"possible": False, "table": None,
                "text": "not possible: the other bank holds no valid table"}
    return {"possible": True, "table": prev,
            "text": f"`eical rollback` would activate table gen {prev['generation']} (crc {prev['crc']}, "
                    f"{prev['bytes']} B, bank {prev['bank']})"}


def _cmd_devices(args: argparse.Namespace) -> int:
    from firmware_bridge.errors import UsageError
    from firmware_bridge.host import probe_emulators, probe_ports

    try:
        found = probe_ports(args.baud) + probe_emulators(args.baud)
    except UsageError as e:
        return _fail(e, "devices", args.json)
    if args.json:
        print(json.dumps(found))
        return ExitCode.OK
    if not found:
        print("no eical boards found on the serial ports, and no board emulator running", file=sys.stderr)
    for d in found:
        emu = d.get("emulator")
        what = f"  (emulator, pid {emu['pid']})" if emu else ""
        firmware = f"firmware {d['firmware']}" if d.get("firmware") else ""
        print(f"{d['port']}  {d['uid']}  {d['profile']}  {firmware}  {d['table']}{what}".replace("    ", "  "))
    return ExitCode.OK


def _cmd_board_emulator(args: argparse.Namespace) -> int:
    from firmware_bridge.emulator import run_emulator
    from firmware_bridge.errors import BridgeError

    test_chip = args.test_chip or (64 if args.micropython else None)
    if args.new and not args.nvm:
        print("eical: error: --new needs --nvm FILE", file=sys.stderr)
        return ExitCode.USAGE
    try:
        return int(run_emulator(profile=args.profile, seed=args.seed, nvm_path=args.nvm, test_chip=test_chip,
                                micropython=args.micropython, uid=args.uid, new_nvm=args.new) or 0)
    except KeyboardInterrupt:
        return ExitCode.OK
    except BridgeError as e:  # NvmImageError: the file is not an NVM image (left untouched)
        return _fail(e, "board-emulator", False)
    except (OSError, ValueError) as e:
        # ProfileError is a ValueError: unknown profile, bad YAML; OSError: NVM file, no micropython.
        print(f"eical: error: {e}", file=sys.stderr)
        return ExitCode.USAGE


def _cmd_nvm(args: argparse.Namespace) -> int:
    from firmware_bridge.errors import BridgeError
    from firmware_bridge.firmware import nvm
    from firmware_bridge.nvmimage import inspect_image, migrate_legacy_image

    try:
        if args.action == "check":
            inspect_image(args.file)
            print(f"{args.file}: eical NVM image, format {nvm.IMAGE_VERSION}")
        else:
            backup = migrate_legacy_image(args.file)
            print(f"{args.file}: migrated to NVM image format {nvm.IMAGE_VERSION}; the old file is {backup}")
    except BridgeError as e:
        return _fail(e, "nvm", False)
    return ExitCode.OK


def _cmd_read_table(args: argparse.Namespace) -> int:
    from firmware_bridge.errors import BridgeError
    from firmware_bridge.host import open_client
    from firmware_bridge.tables import bank_index, read_board_table

    out = Path(args.out)
    if out.exists() and not args.force:
        print(f"eical read-table: error: {out} exists; pass --force to overwrite it", file=sys.stderr)
        return ExitCode.USAGE
    if not out.parent.is_dir():
        print(f"eical read-table: error: {out.parent} is not a directory", file=sys.stderr)
        return ExitCode.USAGE
    client = None
    try:
        client = open_client(args.port, args.baud)
        bt = read_board_table(client, bank_index(args.bank), port=args.port)
    except BridgeError as e:
        return _fail(e, "read-table", args.json)
    finally:
        if client is not None:
            client.close()
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        bt.table.save(tmp)
        os.replace(tmp, out)  # never half a file where the user expects a table
    except OSError as e:
        tmp.unlink(missing_ok=True)
        print(f"eical read-table: error: cannot write {out}: {e.strerror or e}", file=sys.stderr)
        return ExitCode.USAGE
    if args.json:
        print(json.dumps(dict(bt.to_dict(), ok=True, out=str(out), exit_code=int(ExitCode.OK))))
    else:
        knobs = ", ".join(f"{k} {len(v.codes)} codes" for k, v in bt.table.knobs.items())
        which = "active" if bt.active else "inactive"
        print(f"read {bt.describe()} ({which}) of board {bt.uid}: {knobs} -> {out}")
    return ExitCode.OK


def _cmd_rollback(args: argparse.Namespace) -> int:
    from firmware_bridge.errors import BridgeError
    from firmware_bridge.host import open_client
    from firmware_bridge.tables import rollback

    client = None
    try:
        client = open_client(args.port, args.baud)
        report = rollback(client, dry_run=args.dry_run)
    except BridgeError as e:
        return _fail(e, "rollback", args.json)
    except KeyboardInterrupt:
        print("eical: interrupted: the board runs either its table or the previous one (see `eical info`)",
              file=sys.stderr)
        return ExitCode.INTERRUPTED
    finally:
        if client is not None:
            client.close()
    if args.json:
        print(json.dumps(dict(report.to_dict(), ok=True, exit_code=int(ExitCode.OK))))
    else:
        print(report.summary())
    return ExitCode.OK


def _bank(text: str) -> str:
    if text.strip().lower() not in ("active", "a", "b"):
        raise argparse.ArgumentTypeError(f"expected active, A or B, got {text!r}")
    return text.strip()


def _port_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", "-p", required=True, help="serial port or pyserial URL (/dev/ttyACM0, /dev/pts/7, "
                   "socket://host:port, or eicalfault://PORT?ber=1e-3&seed=1&faults=all for a link with injected "
                   "noise)")
    p.add_argument("--baud", type=int, default=115200, help="nominal baud rate; scales timeouts (default 115200; "
                   "never 1200)")


def add_subcommands(subparsers: Any) -> None:
    """Register ``flash``, ``info``, ``read-table``, ``rollback``, ``devices``, ``board-emulator`` and ``nvm``."""
    p = subparsers.add_parser("flash", help="write a gain table into a board's NVM (safe to interrupt and re-run)",
                              description="Identity check, diff, write, verify, commit, read-back. The board keeps "
                              "running its old table until the new one is complete and verified.", epilog=EPILOG)
    p.add_argument("table", help="table.json made by `eical calibrate`")
    _port_args(p)
    p.add_argument("--dry-run", action="store_true", help="check identity, show the diff and a time estimate; write "
                   "nothing")
    p.add_argument("--force", action="store_true", help="write even if the board already runs this table, or the "
                   "table's verdict failed (refused otherwise, exit 1)")
    p.add_argument("--no-readback", action="store_true", help="skip reading the table back after the commit")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")
    p.set_defaults(func=_cmd_flash)

    p = subparsers.add_parser("info", help="ask a board who it is and which table it runs (HELLO)",
                              description="Sends HELLO and prints the board's identity, firmware, chip, knobs, the "
                              "table it runs (bank, generation, CRC), what a rollback would activate, and its boot "
                              "count. Writes nothing to the board.", epilog=READ_EPILOG)
    _port_args(p)
    p.add_argument("--json", action="store_true", help="print HELLO as one JSON object on stdout")
    p.set_defaults(func=_cmd_info)

    p = subparsers.add_parser("read-table", help="read a board's table back into a table.json (re-flashable)",
                              description="Reads the active table (or --bank A|B) with READ_TABLE, checks it against "
                              "the board's CRC and writes it in the table.json format: the board's identity and "
                              "codes. What the board does not store (targets, metrics, the verdict, the seed) is "
                              "absent; 'controller' says it was read back (port, bank, generation, CRC). Flashing "
                              "it back to the same board is 'already up to date'.", epilog=READ_EPILOG)
    _port_args(p)
    p.add_argument("--out", "-o", required=True, metavar="TABLE", help="the table.json to write (refused if it "
                   "exists, unless --force)")
    p.add_argument("--bank", default="active", type=_bank, help="active (default), A or B (the previous table)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")
    p.set_defaults(func=_cmd_read_table)

    p = subparsers.add_parser("rollback", help="go back to the board's previous table (the other NVM bank)",
                              description="Activates the table in the other NVM bank when it holds a valid one, as a "
                              "bootloader's revert does: the board revokes the active bank's header (one write, "
                              "safe to interrupt) and runs the previous table at once and after every boot. The "
                              "newer table is gone from the board afterwards: flash its table.json to return to "
                              "it. `eical info` shows what a rollback would activate.", epilog=EPILOG)
    _port_args(p)
    p.add_argument("--dry-run", action="store_true", help="say which table would become active; change nothing")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")
    p.set_defaults(func=_cmd_rollback)
    _add_local_subcommands(subparsers)


def _add_local_subcommands(subparsers: Any) -> None:
    """The commands that talk to no particular board: ``devices``, ``board-emulator`` and ``nvm``."""
    p = subparsers.add_parser("devices", help="list eical boards on serial ports, and running board emulators",
                              description="Tries HELLO on every serial port the OS lists (short timeout) and on the "
                              "pty of every board emulator running here (they register in $XDG_RUNTIME_DIR/eical "
                              "or a temp directory), and shows those that answer.")
    p.add_argument("--baud", type=int, default=115200, help="nominal baud rate (default 115200; never 1200)")
    p.add_argument("--json", action="store_true", help="print the boards as a JSON list on stdout")
    p.set_defaults(func=_cmd_devices)

    p = subparsers.add_parser("board-emulator", help="serve the board firmware on a pseudo-terminal",
                              description="Prints the pty path on the first line of stdout, then serves the "
                              "firmware with an emulated chip until killed. NVM persists in --nvm FILE.")
    p.add_argument("--profile", default="devboard", help="device profile of the emulated chip (default devboard)")
    add_seed_argument(p)
    p.add_argument("--nvm", metavar="FILE", help="eical NVM image holding the board's tables: an existing file is "
                   "used only when it is one (anything else is refused and left untouched), a missing one is "
                   "created (default: RAM only)")
    p.add_argument("--new", action="store_true", help="start the --nvm image afresh (empty banks) even where an "
                   "image already is")
    p.add_argument("--test-chip", type=int, metavar="N", help="serve the pure-Python test chip with N neurons instead "
                   "of the profile's emulated chip")
    p.add_argument("--micropython", action="store_true", help="run the firmware in a MicroPython unix-port process "
                   "(with the test chip)")
    p.add_argument("--uid", help="UID of the test chip")
    p.set_defaults(func=_cmd_board_emulator)

    p = subparsers.add_parser("nvm", help="check an NVM image file, or migrate one written before image headers",
                              description="check: is FILE an eical NVM image of this format? migrate: add the image "
                              "header to an NVM file from before format 1, keeping its tables (the old file stays "
                              "as FILE.bak).", epilog="exit codes: 0 the image is good (or was migrated); 2 it is not an eical NVM image "
                              "of this format, or cannot be migrated (one line says why)")
    p.add_argument("action", choices=("check", "migrate"), help="check or migrate")
    p.add_argument("file", metavar="FILE", help="the NVM file")
    p.set_defaults(func=_cmd_nvm)
