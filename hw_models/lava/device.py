"""``LavaDevice``: an emulated chip that runs as a Lava process, behind the ``Device`` protocol.

``LavaDevice`` *is* a ``NumpyDevice`` (same constructor, identity, knobs, codes-to-gains mapping, ADC model,
``Monitor``, counter saturation, ``run_true``, ``set_temperature``, ``steps_for``) whose engine runs elsewhere:
its ``engine`` is a ``LavaEngine``, which forwards every window to the chip's Lava process and returns the same
``WindowStats``. So every host-side step of a measurement is NumpyDevice's own code (``observe_proxy`` with the
engine's ``rng_read`` stream, the monitor's round robin, saturation), and the window statistics come from the
same engine code run one step per Lava time step: spikes and proxy readings are bit-identical to numpy's.

Lifecycle (docs/lava.md has the why of each point):

- Lava is imported on the first ``LavaDevice``, never at ``import hw_models.lava``. Importing Lava forces the
  ``fork`` start method; ``_import_lava`` copes with a process that already chose ``fork`` and refuses, in one
  line, one that chose another method. Right after the import it registers an ``atexit`` hook that closes every
  open session, so an interpreter never hangs at exit on Lava's non-daemon workers.
- The process is compiled and started once (``create_runtime``); each window is one ``RunSteps`` run. Before it,
  the host pushes one control message (gains, temperature, length) through an external pipe; the model receives
  it blocking at the window's first step; the window's statistics come back through a second pipe.
- Runs are started non-blocking and then waited for with a liveness check, so a worker that dies without a
  Python exception is reported within a second instead of hanging the host.
- A model exception surfaces as ``LavaModelError`` carrying the model's own message and traceback (Lava itself
  only says "1 Exception(s) occurred"); the workers are then stopped hard (Lava's ``stop()`` deadlocks after a
  model error): terminate the workers, shut down the shared-memory manager and the watchdog, join the ports.
- ``close()`` stops the runtime (``stop()`` in a helper thread with a timeout, hard stop if it does not return),
  joins the two host-side pipe ports (Lava leaves their threads running), removes the log handlers Lava added
  to the root logger and the compiler's logger, and drops the process from Lava's global process registry.

This relies on private attributes of lava-nc 0.10.0 (pinned in pyproject.toml): ``Runtime._messaging_infrastructure``,
``Runtime._watchdog_manager``, ``Runtime._open_ports``, ``Runtime.service_to_runtime``, ``CspRecvPort._queue``.
"""
from __future__ import annotations

import atexit
import logging
import multiprocessing
import queue
import sys
import threading
import time
import warnings
from typing import Optional

import numpy as np

from hw_models.chip import Chip
from hw_models.device import DeviceError
from hw_models.emulator import NumpyDevice
from hw_models.engine import WindowStats
from hw_models.lava.protocol import pack_ctrl, replay_frame, unpack_meas

__all__ = ["LavaDevice", "LavaEngine", "LavaModelError", "LavaUnavailable", "close_all", "open_sessions"]

#: seconds ``close()`` waits for Lava's own ``stop()`` before stopping the workers hard
STOP_TIMEOUT_S = 10.0
#: how often a waiting host checks that the workers are alive
_POLL_S = 0.25
_COMPILER_LOGGER = "lava.magma.compiler.compiler"


class LavaUnavailable(DeviceError):
    """Lava cannot run in this interpreter (not installed, wrong Python, another multiprocessing start method)."""


class LavaModelError(DeviceError):
    """The chip's Lava process model raised (or its worker died). ``str()`` is the model's own message;
    ``remote_traceback`` is the worker's traceback text, also chained as ``__cause__``."""

    def __init__(self, message: str, remote_traceback: str = ""):
        super().__init__(message)
        self.remote_traceback = remote_traceback


class _RemoteTraceback(Exception):
    """Holds a worker's traceback text so that Python prints it as the cause of the error."""

    def __str__(self) -> str:
        return "\n" + self.args[0]


# -- the lazy import -----------------------------------------------------------------------------------------------
_LAVA = None
_SESSIONS: "set[_Session]" = set()  # strong references: an unclosed session must still be closed at exit
_SESSIONS_LOCK = threading.Lock()


def _import_lava():
    """Import Lava and the chip process on first use; register the exit hook right after. Returns a namespace."""
    global _LAVA
    if _LAVA is not None:
        return _LAVA
    if sys.version_info[:2] != (3, 10):
        raise LavaUnavailable(f"the Lava backend needs Python 3.10 (lava-nc 0.10.0), this is "
                              f"{sys.version_info.major}.{sys.version_info.minor}")
    method = multiprocessing.get_start_method(allow_none=True)
    if method not in (None, "fork"):
        raise LavaUnavailable(f"the Lava backend needs the 'fork' multiprocessing start method, but this process "
                              f"already uses {method!r}")
    original = multiprocessing.set_start_method
    if method == "fork":
        # Lava calls set_start_method('fork') at import, which raises once any start method is set, even 'fork'
        multiprocessing.set_start_method = lambda m, force=False: original(m, force=True)
    try:
        from lava.magma.core.run_conditions import RunSteps
        from lava.magma.core.run_configs import Loihi2SimCfg
        from lava.magma.core.process.process import ProcessServer

        from hw_models.lava.procs.chip_process import ChipProcess
    except ImportError as exc:
        raise LavaUnavailable(f"the Lava backend needs lava-nc 0.10.0: pip install -e '.[lava]' ({exc})") from exc
    finally:
        multiprocessing.set_start_method = original

    class _Lava:
        pass

    ns = _Lava()
    ns.RunSteps, ns.Loihi2SimCfg, ns.ProcessServer, ns.ChipProcess = RunSteps, Loihi2SimCfg, ProcessServer, ChipProcess
    # Registered after Lava's import, so it runs before anything Lava (or multiprocessing) registered at exit.
    atexit.register(close_all)
    _LAVA = ns
    return ns


def close_all() -> None:
    """Close every open Lava session (the exit hook; also safe to call by hand)."""
    with _SESSIONS_LOCK:
        sessions = list(_SESSIONS)
    for s in sessions:
        try:
            s.close()
        except Exception:  # at exit, keep closing the others
            pass


def open_sessions() -> int:
    """Number of Lava sessions (compiled, started chip processes) not yet closed."""
    with _SESSIONS_LOCK:
        return len(_SESSIONS)


# -- one compiled, started chip process ----------------------------------------------------------------------------
class _Session:
    """The chip's Lava process, its runtime and the host-side pipe ends (and the recording drain, if any)."""

    def __init__(self, chip: Chip, temperature_k: Optional[float], record_isyn: bool, engine_kwargs: dict,
                 recorder=None):
        lava = _import_lava()
        self._lava = lava
        self.n = chip.n
        self.closed = False
        self.broken: Optional[BaseException] = None
        self.drain: Optional[_Drain] = None
        self.windows = 0
        root, comp = logging.getLogger(), logging.getLogger(_COMPILER_LOGGER)
        root_before, comp_before = list(root.handlers), list(comp.handlers)
        try:
            self.proc = lava.ChipProcess(chip=chip, temperature_k=temperature_k, record_isyn=record_isyn,
                                         recording=recorder is not None,
                                         sample_every_steps=getattr(recorder, "sample_every_steps", 0) or 0,
                                         engine_kwargs=engine_kwargs, name=f"chip-{chip.uid}")
            self.proc.ctrl_in.flag_external_pipe(buffer_size=2)
            self.proc.meas_out.flag_external_pipe(buffer_size=2)
            if recorder is not None:
                self.proc.rec_out.flag_external_pipe(buffer_size=4)
            with _SESSIONS_LOCK:
                _SESSIONS.add(self)
            with warnings.catch_warnings():
                # networkx, which Lava's compiler uses, warns on every graph conversion that pandas is missing
                warnings.filterwarnings("ignore", category=ImportWarning, module=r"networkx\.")
                self.proc.create_runtime(run_cfg=lava.Loihi2SimCfg(select_tag="floating_pt"))
        except BaseException as exc:
            self.broken = exc
            self._hard_stop()
            self._release()
            if isinstance(exc, Exception):
                tb = getattr(exc, "trace", "")  # set by Lava on an exception raised while building the model
                err = LavaModelError(f"the Lava chip process could not start: {type(exc).__name__}: "
                                     f"{str(exc).strip()}", tb)
                if tb:
                    exc.__cause__ = _RemoteTraceback(tb)
                raise err from exc
            raise
        finally:
            # Lava adds a console handler to the root logger per Process and one to its compiler's logger per
            # compile; they would pile up over repeated runs and print every error twice.
            for lg, before in ((root, root_before), (comp, comp_before)):
                for h in list(lg.handlers):
                    if h not in before:
                        lg.removeHandler(h)
        self.runtime = self.proc.runtime
        self.send_port = self.proc.ctrl_in.external_pipe_csp_send_port
        self.recv_port = self.proc.meas_out.external_pipe_csp_recv_port
        if recorder is not None:
            self.drain = _Drain(self.proc.rec_out.external_pipe_csp_recv_port, self.n, recorder)
            self.drain.start()

    # -- running -------------------------------------------------------------------------------------------------
    def run_window(self, ctrl: np.ndarray, n_steps: int) -> np.ndarray:
        """Push the control message, run ``n_steps`` steps, return the statistics message."""
        if self.broken is not None:
            raise DeviceError(f"the Lava chip process failed earlier ({self.broken}); open a new device")
        if self.closed:
            raise DeviceError("the Lava chip process is closed")
        try:
            self.send_port.send(ctrl)
            self.proc.run(condition=self._lava.RunSteps(num_steps=int(n_steps), blocking=False))
            self._wait_readable(self.runtime.service_to_runtime[0])
            self.runtime.wait()  # collects DONE; raises "N Exception(s) occurred" after a model error
            self.windows += 1
            if self.drain is not None:
                self.drain.wait_windows(self.windows, self._check_alive)
            self._wait_readable(self.recv_port)
            msg = self.recv_port.recv()
        except BaseException as exc:
            err = self._fail(exc)
            if err is exc:
                raise
            raise err from err.__cause__
        return msg

    def take_recorder_error(self) -> Optional[BaseException]:
        """The host recorder's exception from the last window, once (later windows run but are not recorded)."""
        if self.drain is None or self.drain.error is None:
            return None
        error, self.drain.error = self.drain.error, None
        return error

    def _check_alive(self) -> None:
        if any(_exitcode(a) is not None for a in self._actors()):
            raise _WorkerExited()

    def _wait_readable(self, port) -> None:
        """Block until ``port`` has a message, checking every ``_POLL_S`` that the workers are alive."""
        q = port._queue
        while True:
            try:
                q.get(timeout=_POLL_S, peek=True)
                return
            except queue.Empty:
                self._check_alive()

    def _actors(self) -> list:
        mi = getattr(self.runtime, "_messaging_infrastructure", None)
        return list(mi.actors) if mi is not None else []

    def _fail(self, exc: BaseException) -> BaseException:
        """Stop the workers hard after a failed run; return the error to raise (the model's own if it raised)."""
        self.broken = exc
        remote = self._remote_exception()
        codes = ", ".join(str(_exitcode(a)) for a in self._actors())
        self._hard_stop()
        self.close()
        if remote is not None:
            rexc, tb = remote
            err = LavaModelError(f"the Lava chip model raised {type(rexc).__name__}: {str(rexc).strip()}", tb)
            rexc.__cause__ = _RemoteTraceback(tb)
            err.__cause__ = rexc
            return err
        if isinstance(exc, _WorkerExited):
            err = LavaModelError(f"a Lava worker process exited during a run (exit codes {codes})")
            err.__cause__ = None
            return err
        return exc

    def _remote_exception(self):
        """The first ``(exception, traceback text)`` a worker reported, waiting up to a second for it."""
        actors = self._actors()
        deadline = time.monotonic() + 1.0
        while True:
            for actor in actors:
                try:
                    found = actor.exception
                except (OSError, EOFError, ValueError):
                    found = None
                if found:
                    return found
            if time.monotonic() > deadline or all(_exitcode(a) is None for a in actors):
                return None
            time.sleep(0.02)

    # -- stopping ------------------------------------------------------------------------------------------------
    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            runtime = getattr(self, "runtime", None)
            # Lava's stop() only works on a runtime that has run (it joins workers it never told to stop
            # otherwise), that is not running, and whose workers are all alive; in every other case stop hard.
            if (self.broken is None and runtime is not None and runtime._is_started and not runtime._is_running
                    and all(_exitcode(a) is None for a in self._actors())):
                done = threading.Event()

                def stop():
                    try:
                        runtime.stop()
                    except Exception:
                        pass  # the hard stop below reaps whatever is left
                    finally:
                        done.set()

                t = threading.Thread(target=stop, name="eical-lava-stop", daemon=True)
                t.start()
                if not done.wait(STOP_TIMEOUT_S):
                    self._hard_stop()
                t.join(1.0)
            self._hard_stop()  # a no-op after a clean stop; after a failure it reaps what is left
        finally:
            self._release()

    def _hard_stop(self) -> None:
        """Terminate the workers and free Lava's resources without talking to the workers."""
        runtime = getattr(self.proc, "runtime", None) if hasattr(self, "proc") else None
        if runtime is None:
            return
        mi = getattr(runtime, "_messaging_infrastructure", None)
        for actor in list(mi.actors) if mi is not None else []:
            try:
                if _exitcode(actor) is None:
                    actor.terminate()
                    multiprocessing.Process.join(actor, 2.0)
                    if _exitcode(actor) is None:
                        actor.kill()
                actor.join()  # reaps and closes the actor's result pipe
            except (ValueError, AssertionError, OSError):
                pass  # already joined and closed
        smm = getattr(mi, "smm", None) if mi is not None else None
        if smm is not None:
            try:
                smm.shutdown()
            except Exception:
                pass
        wd = getattr(runtime, "_watchdog_manager", None)
        if wd is not None:
            try:
                wd.stop()
            except Exception:
                pass
        for port in list(getattr(runtime, "_open_ports", [])):
            try:
                port.join()
            except Exception:
                pass
        runtime._open_ports = []
        for q in getattr(runtime, "exception_q", None) or []:  # left behind when the start failed
            for end in (getattr(q, "_reader", None), getattr(q, "_writer", None)):  # Queue.close() keeps both
                try:
                    end.close()
                except Exception:
                    pass
        runtime._is_running = False
        runtime._is_started = False  # Runtime.__del__ would call stop() and block

    def _release(self) -> None:
        """Drop everything Lava keeps alive once the workers are gone."""
        drain = getattr(self, "drain", None)
        if drain is not None:
            drain.stop.set()
            drain.join(4 * _POLL_S)
        proc = getattr(self, "proc", None)
        ends = ((getattr(proc, "ctrl_in", None), "external_pipe_csp_send_port"),
                (getattr(proc, "meas_out", None), "external_pipe_csp_recv_port"),
                (getattr(proc, "rec_out", None), "external_pipe_csp_recv_port"))
        for owner, name in ends:
            port = getattr(owner, name, None)
            if port is not None:
                try:
                    port.join()  # ends the port's helper thread, which Lava never joins for external pipes
                except Exception:
                    pass
        if proc is not None:
            try:
                self._lava.ProcessServer().processes.remove(proc)
            except ValueError:
                pass
        self.closed = True
        with _SESSIONS_LOCK:
            _SESSIONS.discard(self)


class _WorkerExited(Exception):
    pass


class _Discard:
    """A recorder that drops everything (after the host's recorder failed, frames are still drained)."""

    def on_spikes(self, step, neurons) -> None:
        pass

    def on_sample(self, step, *arrays) -> None:
        pass


class _Drain(threading.Thread):
    """Drains the recording pipe while windows run, replaying each frame's calls on the host's recorder.

    Running beside the blocked host keeps a long window's recording from filling the pipe (a full pipe would block
    the model, and with it the run). A recorder exception is kept for the host to raise after the window; the
    frames that follow are still drained, so the model never blocks.
    """

    def __init__(self, port, n: int, recorder):
        super().__init__(name="eical-lava-record", daemon=True)
        self.port, self.n, self.recorder = port, n, recorder
        self.stop = threading.Event()
        self.ended = 0
        self.error: Optional[BaseException] = None
        self.failed = False
        self._cond = threading.Condition()

    def run(self) -> None:
        q = self.port._queue
        while not self.stop.is_set():
            try:
                q.get(timeout=_POLL_S, peek=True)
            except queue.Empty:
                continue
            frame = self.port.recv()
            try:
                ended = replay_frame(frame, self.n, _Discard() if self.failed else self.recorder)
            except BaseException as exc:  # the recorder's (or a bad frame's): count the frame's windows anyway
                if not self.failed:
                    self.error, self.failed = exc, True
                try:
                    ended = replay_frame(frame, self.n, _Discard())
                except BaseException:
                    ended = 1
            with self._cond:
                self.ended += ended
                self._cond.notify_all()

    def wait_windows(self, count: int, check_alive) -> None:
        """Block until the records of ``count`` windows have been replayed."""
        with self._cond:
            while self.ended < count:
                if not self._cond.wait(_POLL_S):
                    check_alive()


def _exitcode(actor):
    """The actor's exit code; None while it runs; "joined" once Lava has joined and closed it."""
    try:
        return actor.exitcode
    except ValueError:  # Lava's SystemProcess.join() closes the process object
        return "joined"


# -- the engine stand-in ------------------------------------------------------------------------------------------
class LavaEngine:
    """What ``NumpyDevice`` asks of its engine, served by the chip's Lava process.

    ``set_gains`` and ``set_temperature`` are kept on the host and pushed with the next window (so they take
    effect from the next window, as they do in numpy); ``run(n_steps)`` runs one window in Lava and returns its
    ``WindowStats``; ``rng_read`` is the ADC read-noise stream of the host's ``Engine`` for this chip. A
    ``recorder`` gets the same calls, in the same order, as the numpy engine makes (forwarded from the model).
    """

    def __init__(self, chip: Chip, *, rng_read: np.random.Generator, temperature_k: float, gain_e: np.ndarray,
                 gain_i: np.ndarray, record_isyn: bool = False, input_stream: int = 0, recorder=None,
                 threads: Optional[int] = None):
        self.chip = chip
        self.n = chip.n
        self.dt = chip.dt
        self.rng_read = rng_read
        self.temperature_k = float(temperature_k)
        self.record_isyn = record_isyn
        self.step_index = 0
        self.gain_e = np.asarray(gain_e, dtype=float).copy()
        self.gain_i = np.asarray(gain_i, dtype=float).copy()
        self._push_gains = True  # the model's engine starts at gain 1
        self._push_temperature = False  # the model's engine starts at this temperature
        self._seq = 0
        # the engine's own default is left alone unless asked for, so the model builds exactly the host's engine
        engine_kwargs = {"input_stream": int(input_stream)} if input_stream else {}
        if threads is not None:
            engine_kwargs["threads"] = int(threads)
        self.recorder = recorder
        self._session = _Session(chip, self.temperature_k, record_isyn, engine_kwargs, recorder)

    def set_gains(self, gain_e: np.ndarray, gain_i: np.ndarray) -> None:
        ge = np.asarray(gain_e, dtype=float)
        gi = np.asarray(gain_i, dtype=float)
        if ge.shape != (self.n,) or gi.shape != (self.n,):
            raise ValueError(f"gains must have shape ({self.n},), got {ge.shape} and {gi.shape}")
        self.gain_e, self.gain_i = ge.copy(), gi.copy()
        self._push_gains = True

    def set_temperature(self, kelvin: float) -> None:
        self.temperature_k = float(kelvin)
        self._push_temperature = True

    def run(self, n_steps: int) -> WindowStats:
        n_steps = int(n_steps)
        if n_steps < 1:
            raise ValueError(f"a window needs at least one step, got {n_steps}")
        ctrl = pack_ctrl(self.n, self._seq, n_steps, self.temperature_k,
                         (self.gain_e, self.gain_i) if self._push_gains else None, self._push_temperature)
        msg = self._session.run_window(ctrl, n_steps)
        self._push_gains = self._push_temperature = False
        seq, step_index, stats = unpack_meas(msg, self.n, self.dt)
        if seq != self._seq or stats.n_steps != n_steps:
            self._session.close()
            raise DeviceError(f"Lava chip process answered window {seq} ({stats.n_steps} steps) to window "
                              f"{self._seq} ({n_steps} steps)")
        self._seq += 1
        self.step_index = step_index
        error = self._session.take_recorder_error()
        if error is not None:
            raise error
        return stats

    @property
    def closed(self) -> bool:
        return self._session.closed

    def close(self) -> None:
        self._session.close()


# -- the device ----------------------------------------------------------------------------------------------------
class LavaDevice(NumpyDevice):
    """An emulated chip of ``profile`` with mismatch ``seed`` that runs in Lava; implements ``Device``.

    Same constructor and behaviour as ``NumpyDevice`` (and bit-identical results); ``close()`` (or leaving a
    ``with`` block) stops the Lava workers. Needs Python 3.10 and lava-nc 0.10.0 (``pip install -e '.[lava]'``).
    A ``recorder`` receives the very calls (spikes, samples) the numpy engine would make.
    """

    backend = "lava"

    def __init__(self, profile, seed: int, *, temperature_k: Optional[float] = None, recorder=None,
                 record_isyn: bool = False, chip: Optional[Chip] = None, input_stream: int = 0,
                 threads: Optional[int] = None):
        _import_lava()  # first, so a missing Lava or a wrong Python is reported before any work
        self._closed = True  # until the Lava process runs
        # NumpyDevice draws the chip, builds identity, knobs, monitor and a host Engine, and sets nominal codes.
        # The host Engine is never stepped: it validates the chip like numpy does and hands over its ADC read stream.
        super().__init__(profile, seed, temperature_k=temperature_k, record_isyn=record_isyn, chip=chip,
                         input_stream=input_stream, threads=threads)
        host = self.engine
        self.engine = LavaEngine(self.chip, rng_read=host.rng_read, temperature_k=host.temperature_k,
                                 gain_e=host.gain_e, gain_i=host.gain_i, record_isyn=record_isyn,
                                 input_stream=input_stream, recorder=recorder, threads=threads)
        self._closed = False

    def close(self) -> None:
        engine = getattr(self, "engine", None)
        if isinstance(engine, LavaEngine):
            engine.close()
        self._closed = True

    def __enter__(self) -> "LavaDevice":
        return self

    def __del__(self):
        if not sys.is_finalizing():
            try:
                self.close()
            except Exception:
                pass
