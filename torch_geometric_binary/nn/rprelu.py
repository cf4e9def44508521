from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.nn import Parameter

from torch_geometric_binary import _ext
from torch_geometric_binary.nn.functional import KERNEL_DTYPES, _use_ext


def _use_kernels(x: Tensor, *params: Tensor) -> bool:
    return x.dtype in KERNEL_DTYPES and all(
        p.dtype == torch.float32 for p in params) and _use_ext(x)


class RPReLUFunction(torch.autograd.Function):
    r"""RPReLU's forward and backward in few passes over the input (the
    autograd of the elementwise form makes several times more, and the
    activation follows every normalized layer): the forward is
    :math:`z + (\beta - 1) \min(z, 0) + \zeta` with :math:`z = x - \gamma`.
    On the CPU each way is one pass of a float32 C++ kernel that keeps the
    input only (the same bits as the elementwise form in float32). A
    bfloat16 or float16 input (autocast) is computed in float32 and its
    output and gradient rounded once to its dtype; otherwise the backward
    keeps :math:`z`."""
    @staticmethod
    def forward(ctx, x: Tensor, gamma: Tensor, beta: Tensor,
                zeta: Tensor) -> Tensor:
        ctx.kernels = _use_kernels(x, gamma, beta, zeta)
        if ctx.kernels:
            ctx.save_for_backward(x, gamma, beta)
            return _ext.fused.rprelu_forward(x.float(), gamma, beta - 1,
                                             zeta).to(x.dtype)
        z = x - gamma.to(x.dtype)
        out = torch.addcmul(z, z.clamp_max(0), (beta - 1).to(x.dtype))
        out += zeta.to(x.dtype)
        ctx.save_for_backward(z, beta)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        if ctx.kernels:
            x, gamma, beta = ctx.saved_tensors
            grad_x, *grads = _ext.fused.rprelu_backward(
                grad_out.float(), x.float(), gamma, beta)
            return (grad_x.to(x.dtype), *grads)
        z, beta = ctx.saved_tensors
        # The slope branch includes z = 0, as in PReLU.
        grad_x = torch.where(z > 0, grad_out, grad_out * beta.to(z.dtype))
        rows = (-1, z.size(-1))
        grad_zeta = grad_out.reshape(rows).sum(0, dtype=beta.dtype)
        grad_gamma = grad_x.reshape(rows).sum(0, dtype=beta.dtype).neg_()
        grad_beta = (grad_out * z.clamp_max(0)).reshape(rows).sum(
            0, dtype=beta.dtype)
        return grad_x, grad_gamma, grad_beta, grad_zeta


class RPReLU(torch.nn.Module):
    r"""The RPReLU activation from the `"ReActNet: Towards Precise Binary
    Neural Network with Generalized Activation Functions"
    <https://arxiv.org/abs/2003.03488>`_ paper (Liu et al., ECCV 2020): a
    PReLU whose input and output are shifted by learnable amounts, per
    channel :math:`c`,

    .. math::
        \mathrm{RPReLU}(x_c) = \begin{cases}
            x_c - \gamma_c + \zeta_c & \text{if } x_c - \gamma_c > 0 \\
            \beta_c (x_c - \gamma_c) + \zeta_c & \text{otherwise,}
        \end{cases}

    with the shifts :math:`\boldsymbol{\gamma}` (input) and
    :math:`\boldsymbol{\zeta}` (output), initialized to zero, and the slope
    :math:`\boldsymbol{\beta}`, initialized to :obj:`0.25` as PReLU's. It
    lets a binary network move and reshape the distribution that the next
    sign sees, channel by channel.

    Args:
        channels (int): Number of channels (the last dimension of the
            input).
        init (float, optional): The initial slope :math:`\beta`.
            (default: :obj:`0.25`)

    Shapes:
        - **input:** :math:`(*, C)`
        - **output:** :math:`(*, C)`
    """
    def __init__(self, channels: int, init: float = 0.25):
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or \
                channels < 1:
            raise ValueError(f"RPReLU needs a positive number of channels "
                             f"(got {channels!r})")
        self.channels = channels
        self.init = float(init)
        self.gamma = Parameter(torch.empty(channels))
        self.beta = Parameter(torch.empty(channels))
        self.zeta = Parameter(torch.empty(channels))
        self.reset_parameters()

    def reset_parameters(self):
        torch.nn.init.zeros_(self.gamma)
        torch.nn.init.constant_(self.beta, self.init)
        torch.nn.init.zeros_(self.zeta)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 0 or x.size(-1) != self.channels:
            raise ValueError(f"{self.__class__.__name__} expects inputs with "
                             f"{self.channels} channels in the last "
                             f"dimension (got shape {tuple(x.shape)})")
        # Under autocast, it keeps the input's dtype (as the binary layers
        # do).
        return RPReLUFunction.apply(x, self.gamma, self.beta, self.zeta)

    @torch.no_grad()
    def sign_threshold(self, offset: Optional[Tensor] = None
                       ) -> Tuple[Tensor, Tensor]:
        r"""The per-channel threshold :math:`t_c` with

        .. math::
            \mathrm{sign}\big(\mathrm{RPReLU}(x_c) - o_c\big) =
            \mathrm{sign}(x_c - t_c)

        for every real :math:`x_c` (:math:`\mathrm{sign}(0) = +1`, the
        package's convention), where :math:`\mathbf{o}` is :obj:`offset`
        (*e.g.* the next layer's RSign thresholds; zero by default), so that
        packed inference can fold the activation into a threshold of its
        input. With :math:`\zeta^{\prime}_c = \zeta_c - o_c`:

        * :math:`\beta_c > 0`: the activation is continuous and increasing,
          and equals :math:`\zeta^{\prime}_c` at :math:`x_c = \gamma_c`; its
          zero lies on the identity branch if :math:`\zeta^{\prime}_c \le 0`
          and on the slope branch otherwise:

          .. math::
              t_c = \begin{cases}
                  \gamma_c - \zeta^{\prime}_c & \text{if }
                  \zeta^{\prime}_c \le 0 \\
                  \gamma_c - \zeta^{\prime}_c / \beta_c & \text{if }
                  \zeta^{\prime}_c > 0;
              \end{cases}

        * :math:`\beta_c = 0`: the output is :math:`\zeta^{\prime}_c` up to
          :math:`\gamma_c`, then increases: :math:`t_c = \gamma_c -
          \zeta^{\prime}_c` if :math:`\zeta^{\prime}_c < 0`, and
          :math:`t_c = -\infty` (always :math:`+1`) otherwise;
        * :math:`\beta_c < 0`: the output falls to :math:`\zeta^{\prime}_c`
          at :math:`\gamma_c`, then rises. For :math:`\zeta^{\prime}_c \ge 0`
          it is never negative (:math:`t_c = -\infty`); for
          :math:`\zeta^{\prime}_c < 0` its sign is :math:`-1` only on the
          band :math:`(\gamma_c - \zeta^{\prime}_c / \beta_c, \gamma_c -
          \zeta^{\prime}_c)`, which no single threshold gives: these
          channels are flagged and their :math:`t_c` is NaN.

        The identity holds in exact arithmetic; rounding of the float
        forward can flip inputs within an ulp of :math:`t_c`.

        Args:
            offset (torch.Tensor, optional): What the sign subtracts from
                the activation, :obj:`[channels]`. (default: :obj:`None`)

        Returns:
            The thresholds :math:`\mathbf{t}` :obj:`[channels]` and a boolean
            mask :obj:`[channels]` of the channels whose sign is not a
            threshold test (:math:`\beta_c < 0` and :math:`\zeta^{\prime}_c
            < 0`).
        """
        gamma, beta, zeta = self.gamma, self.beta, self.zeta
        if offset is not None:
            offset = torch.as_tensor(offset, dtype=zeta.dtype,
                                     device=zeta.device)
            if offset.shape not in ((), (self.channels, )):
                raise ValueError(f"{self.__class__.__name__}.sign_threshold: "
                                 f"'offset' must have {self.channels} "
                                 f"entries (got shape {tuple(offset.shape)})")
            zeta = zeta - offset
        inf = torch.full_like(gamma, float('inf'))
        # The slope branch's zero, where beta > 0 (guarded division).
        slope_zero = gamma - zeta / torch.where(beta > 0, beta,
                                                torch.ones_like(beta))
        t = torch.where(zeta <= 0, gamma - zeta, slope_zero)
        t = torch.where((beta <= 0) & (zeta >= 0), -inf, t)
        non_monotone = (beta < 0) & (zeta < 0)
        t = torch.where(non_monotone, torch.full_like(t, float('nan')), t)
        return t, non_monotone

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({self.channels})'
