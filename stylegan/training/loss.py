"""The StyleGAN2/StyleGAN3 training objective, as in the releases' `training/loss.py`:
non-saturating logistic loss (Goodfellow et al. 2014), lazy R1 on real images (Mescheder et al.
2018), path-length regularisation (StyleGAN2 paper, section 3.2), style mixing, and StyleGAN3's
Gaussian blur of D's inputs that fades out over the first `blur_fade_kimg`.

The training loop runs phases: `Gmain`/`Dmain` every minibatch and `Greg`/`Dreg` every
`reg_interval` minibatches with `gain=reg_interval` (lazy regularisation), or `Gboth`/`Dboth`
when regularising every minibatch. `accumulate_gradients` adds `.grad` to the networks' parameters
and returns the statistics it would have reported, as detached per-sample tensors.
"""
import numpy as np
import torch
import torch.nn.functional as F

from ops import upfirdn2d

PHASES = ('Gmain', 'Greg', 'Gboth', 'Dmain', 'Dreg', 'Dboth')


def lazy_regularization_correction(lr, betas, reg_interval):
    """Adam's (lr, betas) for a network whose regulariser runs every `reg_interval` minibatches
    (StyleGAN2 paper, appendix B): it takes c+1 optimizer steps per c minibatches, so
    lr *= c / (c + 1) and betas **= c / (c + 1) keep the effective step and momentum horizon.
    `reg_interval=None` (regularised every minibatch) leaves them unchanged."""
    if reg_interval is None:
        return lr, tuple(betas)
    if reg_interval < 1:
        raise ValueError(f'reg_interval must be a positive integer or None, got {reg_interval}.')
    mb_ratio = reg_interval / (reg_interval + 1)
    return lr * mb_ratio, tuple(beta ** mb_ratio for beta in betas)


def blur_sigma_at(cur_nimg, blur_init_sigma, blur_fade_kimg):
    """StyleGAN3's D-input blur: `blur_init_sigma` pixels at the start, fading linearly to 0 at
    `blur_fade_kimg` thousand images."""
    if blur_fade_kimg <= 0:
        return 0
    return max(1 - cur_nimg / (blur_fade_kimg * 1e3), 0) * blur_init_sigma


def gaussian_blur(images, sigma):
    """images [N, C, H, W] blurred with a separable Gaussian of std `sigma`, truncated at 3 sigma
    (taps exp2(-(x / sigma)^2), as in the release); unchanged when the kernel has one tap."""
    radius = np.floor(sigma * 3)
    if radius <= 0:
        return images
    taps = torch.arange(-radius, radius + 1, device=images.device).div(sigma).square().neg().exp2()
    return upfirdn2d.filter2d(images, taps / taps.sum())


def r1_penalty(real_logits, real_images):
    """||d sum(D(x)) / dx||^2 per sample [N], differentiable (create_graph) for the D step."""
    grads, = torch.autograd.grad(outputs=[real_logits.sum()], inputs=[real_images], create_graph=True)
    return grads.square().sum(dim=[1, 2, 3])


def path_lengths(images, ws):
    """||J_w^T y|| per sample [N] for y ~ N(0, I) / sqrt(H * W): the Jacobian of the image with
    respect to the w's, projected on a random image (StyleGAN2 paper, eq. 4), averaged over ws."""
    noise = torch.randn_like(images) / np.sqrt(images.shape[2] * images.shape[3])
    grads, = torch.autograd.grad(outputs=[(images * noise).sum()], inputs=[ws], create_graph=True)
    return grads.square().sum(dim=2).mean(dim=1).sqrt()


class StyleGAN2Loss:
    """The release's `StyleGAN2Loss` (without its `device` argument: state lives on G's device).
    `pl_mean`, the moving average of path lengths, is the loss's only state: save `state_dict()`
    with a snapshot for an exact resume. `pl_no_weight_grad` is accepted for the releases'
    configs; torch's autograd already skips weight gradients that nobody asked for."""

    def __init__(self, G, D, augment_pipe=None, r1_gamma=10, style_mixing_prob=0, pl_weight=0, pl_batch_shrink=2,
                 pl_decay=0.01, pl_no_weight_grad=False, blur_init_sigma=0, blur_fade_kimg=0):
        if pl_batch_shrink < 1:
            raise ValueError(f'pl_batch_shrink must be >= 1, got {pl_batch_shrink}.')
        self.G = G
        self.D = D
        self.augment_pipe = augment_pipe
        self.r1_gamma = r1_gamma
        self.style_mixing_prob = style_mixing_prob
        self.pl_weight = pl_weight
        self.pl_batch_shrink = int(pl_batch_shrink)
        self.pl_decay = pl_decay
        self.pl_no_weight_grad = pl_no_weight_grad
        self.blur_init_sigma = blur_init_sigma
        self.blur_fade_kimg = blur_fade_kimg
        device = next(G.parameters()).device
        self.pl_mean = torch.zeros([], device=device)

    def state_dict(self):
        return {'pl_mean': self.pl_mean.detach().cpu().clone()}

    def load_state_dict(self, state):
        self.pl_mean.copy_(state['pl_mean'])

    # --- forward passes -----------------------------------------------------------------------------
    def run_G(self, z, c, update_emas=False):
        """images [N, C, H, W], ws [N, num_ws, w_dim]. With probability `style_mixing_prob` the
        whole batch switches, from a random layer on, to the ws of a second set of latents.
        The mapping gets both releases' w_avg switches: with StyleGAN3 semantics w_avg moves only when
        `update_emas` (Dmain), with StyleGAN2-ADA semantics on every call of the training-mode G
        except the style-mixing one (`skip_w_avg_update`)."""
        ws = self.G.mapping(z, c, update_emas=update_emas)
        if self.style_mixing_prob > 0:
            num_ws = ws.shape[1]
            cutoff = torch.empty([], dtype=torch.int64, device=ws.device).random_(1, num_ws)
            cutoff = torch.where(torch.rand([], device=ws.device) < self.style_mixing_prob, cutoff,
                                 torch.full_like(cutoff, num_ws))
            mixed = self.G.mapping(torch.randn_like(z), c, update_emas=False, skip_w_avg_update=True)
            later = (torch.arange(num_ws, device=ws.device) >= cutoff).reshape(1, -1, 1)
            ws = torch.where(later, mixed, ws)
        images = self.G.synthesis(ws, update_emas=update_emas)
        return images, ws

    def run_D(self, images, c, blur_sigma=0, update_emas=False):
        """logits [N, 1] of D on blurred, then augmented, images."""
        images = gaussian_blur(images, blur_sigma)
        if self.augment_pipe is not None:
            images = self.augment_pipe(images)
        return self.D(images, c, update_emas=update_emas)

    # --- phases ----------------------------------------------------------------------------------------
    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg):
        """Backpropagate the loss terms of `phase` (one of PHASES), scaled by `gain`, into the
        parameters' `.grad`. real_img [N, C, H, W] float in [-1, 1], real_c [N, c_dim], gen_z
        [N, z_dim], gen_c [N, c_dim]. Returns {'Loss/...': detached per-sample tensor}."""
        if phase not in PHASES:
            raise ValueError(f"unknown loss phase '{phase}'; accepted phases are {', '.join(PHASES)}.")
        if self.pl_weight == 0:
            phase = {'Greg': 'none', 'Gboth': 'Gmain'}.get(phase, phase)
        if self.r1_gamma == 0:
            phase = {'Dreg': 'none', 'Dboth': 'Dmain'}.get(phase, phase)
        blur_sigma = blur_sigma_at(cur_nimg, self.blur_init_sigma, self.blur_fade_kimg)
        stats = {}
        if phase in ('Gmain', 'Gboth'):
            self._generator_main(gen_z, gen_c, gain, blur_sigma, stats)
        if phase in ('Greg', 'Gboth'):
            self._generator_path_length(gen_z, gen_c, gain, stats)
        loss_fake = 0
        if phase in ('Dmain', 'Dboth'):
            loss_fake = self._discriminator_fake(gen_z, gen_c, gain, blur_sigma, stats)
        if phase in ('Dmain', 'Dreg', 'Dboth'):
            self._discriminator_real(phase, real_img, real_c, gain, blur_sigma, loss_fake, stats)
        return {name: value.detach() for name, value in stats.items()}

    def _generator_main(self, gen_z, gen_c, gain, blur_sigma, stats):
        """G maximises D's logits on its images: softplus(-D(G(z))) = -log sigmoid(D(G(z)))."""
        gen_img, _ws = self.run_G(gen_z, gen_c)
        gen_logits = self.run_D(gen_img, gen_c, blur_sigma=blur_sigma)
        loss = F.softplus(-gen_logits)
        stats.update({'Loss/scores/fake': gen_logits, 'Loss/signs/fake': gen_logits.sign(), 'Loss/G/loss': loss})
        loss.mean().mul(gain).backward()

    def _generator_path_length(self, gen_z, gen_c, gain, stats):
        """(|J^T y| - a)^2 on a batch shrunk by `pl_batch_shrink`; a = running mean of |J^T y|."""
        batch_size = gen_z.shape[0] // self.pl_batch_shrink
        gen_img, gen_ws = self.run_G(gen_z[:batch_size], gen_c[:batch_size])
        lengths = path_lengths(gen_img, gen_ws)
        pl_mean = self.pl_mean.lerp(lengths.mean().to(self.pl_mean.dtype), self.pl_decay)
        self.pl_mean.copy_(pl_mean.detach())
        penalty = (lengths - pl_mean).square()
        loss = penalty * self.pl_weight
        stats.update({'Loss/pl_penalty': penalty, 'Loss/G/reg': loss})
        loss.mean().mul(gain).backward()

    def _discriminator_fake(self, gen_z, gen_c, gain, blur_sigma, stats):
        """D minimises its logits on generated images: softplus(D(G(z))) = -log(1 - sigmoid)."""
        gen_img, _ws = self.run_G(gen_z, gen_c, update_emas=True)
        gen_logits = self.run_D(gen_img, gen_c, blur_sigma=blur_sigma, update_emas=True)
        loss = F.softplus(gen_logits)
        stats.update({'Loss/scores/fake': gen_logits, 'Loss/signs/fake': gen_logits.sign()})
        loss.mean().mul(gain).backward()
        return loss.detach()

    def _discriminator_real(self, phase, real_img, real_c, gain, blur_sigma, loss_fake, stats):
        """D maximises its logits on real images (main) and/or pays gamma/2 * R1 (reg)."""
        with_r1 = phase in ('Dreg', 'Dboth')
        real_img = real_img.detach().requires_grad_(with_r1)
        real_logits = self.run_D(real_img, real_c, blur_sigma=blur_sigma)
        stats.update({'Loss/scores/real': real_logits, 'Loss/signs/real': real_logits.sign()})
        mean_loss = 0  # the two terms have shapes [N, 1] and [N]: averaged separately
        if phase in ('Dmain', 'Dboth'):
            loss_real = F.softplus(-real_logits)
            stats['Loss/D/loss'] = loss_fake + loss_real
            mean_loss = loss_real.mean()
        if with_r1:
            penalty = r1_penalty(real_logits, real_img)
            loss_r1 = penalty * (self.r1_gamma / 2)
            stats.update({'Loss/r1_penalty': penalty, 'Loss/D/reg': loss_r1})
            mean_loss = mean_loss + loss_r1.mean()
        mean_loss.mul(gain).backward()
