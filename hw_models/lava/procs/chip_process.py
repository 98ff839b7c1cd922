"""One emulated chip as one Lava Process, with its floating-point ProcessModel.

``ChipProcess`` is *fused*: the mismatched neuron population, its seeded Poisson input pools and the input
connectivity live in one Process (one OS process at run time). Its model owns a ``SteppedEngine`` (the shared
``hw_models.engine.Engine``, advanced one step per ``run_spk``), so it runs the very same compiled step
(``hw_models.kernels``), input blocks and arithmetic as the numpy emulator and gives the same spikes to
the bit. Why fused and not a graph of source, ``Sparse`` and neuron Processes: see docs/lava.md.

Ports (both flagged as external pipes by the host, see ``hw_models.lava.protocol`` for the messages):

- ``ctrl_in``: one control message per window, received blocking at the window's first step;
- ``meas_out``: one message of window statistics, sent at the window's last step;
- ``rec_out``: only when ``recording``: the engine's recorder calls, packed in frames, sent as
  frames fill and at the window's last step (before ``meas_out``); the host drains it while the window runs.

Imports are absolute and the module has no side effects: Lava's model discovery executes it again, under a bare
module name, on every compile.
"""
import numpy as np

from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from hw_models.lava.protocol import FrameWriter, ctrl_len, meas_len, pack_meas, rec_frame_len, unpack_ctrl
from hw_models.lava.stepping import SteppedEngine


class ChipProcess(AbstractProcess):
    """An emulated chip: ``chip`` (a ``hw_models.chip.Chip``) at ``temperature_k`` (None: the profile's T0).

    ``record_isyn`` also accumulates the true net synaptic current (cond_lif); ``recording`` forwards the
    engine's recorder calls (spikes, and state samples every ``sample_every_steps`` steps) through ``rec_out``;
    ``engine_kwargs`` go to the engine as they are (e.g. ``input_stream``). The chip reaches the model through
    the process parameters; Lava forks its workers, so nothing is pickled.
    """

    def __init__(self, *, chip, temperature_k=None, record_isyn=False, recording=False, sample_every_steps=0,
                 engine_kwargs=None, **kwargs):
        super().__init__(chip=chip, temperature_k=temperature_k, record_isyn=record_isyn, recording=bool(recording),
                         sample_every_steps=int(sample_every_steps), engine_kwargs=dict(engine_kwargs or {}),
                         **kwargs)
        self.ctrl_in = InPort(shape=(ctrl_len(chip.n),))
        self.meas_out = OutPort(shape=(meas_len(chip.n),))
        self.rec_out = OutPort(shape=(rec_frame_len(chip.n),))  # unconnected (sends nothing) unless recording


@implements(proc=ChipProcess, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyChipProcessModel(PyLoihiProcessModel):
    """Advances the chip's engine one model step per Lava time step.

    At a window's first step it blocks on ``ctrl_in`` for the window's control message (gains, temperature,
    length), applies it, and opens the window; at the window's last step it sends the window's statistics.
    """

    ctrl_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    meas_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    rec_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)

    def __init__(self, proc_params=None):
        super().__init__(proc_params)
        p = self.proc_params
        chip = p["chip"]
        # the ports are attached after __init__, so the writer sends through a late-bound lambda
        self._writer = (FrameWriter(chip.n, p["sample_every_steps"], lambda frame: self.rec_out.send(frame))
                        if p["recording"] else None)
        self.engine = SteppedEngine(chip, temperature_k=p["temperature_k"], record_isyn=p["record_isyn"],
                                    recorder=self._writer, **p["engine_kwargs"])
        self._left = 0  # steps left in the open window; 0: the next step opens a window
        self._seq = -1

    def run_spk(self) -> None:
        engine = self.engine
        if self._left == 0:
            self._open_window(self.ctrl_in.recv())
        engine.step()
        self._left -= 1
        if self._left == 0:
            stats = engine.end_window()
            if self._writer is not None:
                self._writer.end_window()
            self.meas_out.send(pack_meas(self._seq, engine.step_index, stats))

    def _open_window(self, msg: np.ndarray) -> None:
        seq, n_steps, temperature_k, gains = unpack_ctrl(msg, self.engine.n)
        if seq != self._seq + 1:
            raise ValueError(f"chip process: control message {seq} out of order (expected {self._seq + 1})")
        if temperature_k is not None:
            self.engine.set_temperature(temperature_k)
        if gains is not None:
            self.engine.set_gains(*gains)
        self._seq = seq
        self._left = n_steps
        self.engine.begin_window()
