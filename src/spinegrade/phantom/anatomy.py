"""The analytic 3D model of one phantom study: a lordotic lumbar spine in patient coordinates (LPS, mm).

Every series is drawn by asking `Anatomy.tissue` what lies at its pixels' patient coordinates, so the three
series of a study agree by construction. The spine lives in a curved frame (u to the patient's left,
v posterior, s superior along the lordotic axis), bent sideways by a slight scoliosis; lesions narrow the
canal, the lateral recesses and the foramina at the labelled discs as much as their latent severity says.
Patients differ in lordosis, vertebra and disc heights, canal width, pose and disc degeneration (dark, thin
discs, drawn independently of the graded conditions); now and then a lumbarised S1 adds a sixth mobile
disc below L5/S1 (the labels still count L1/L2 to L5/S1 from the top, as the radiologists would).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

import numpy as np
from scipy.spatial.transform import Rotation

from spinegrade.vocab import CONDITIONS, LEVELS


class Tissue(IntEnum):
    """Tissue codes of the label map; `render` turns them into sequence-specific intensities."""

    AIR = 0
    SOFT = 1
    FAT = 2
    MUSCLE = 3
    MARROW = 4
    CORTEX = 5  # cortical bone and ligaments: dark on every sequence
    ANNULUS = 6
    CSF = 7
    NERVE = 8
    LESION = 9  # bulging disc, osteophyte, thickened ligament: what narrows a canal
    NUCLEUS = 10  # NUCLEUS + i is the nucleus of disc i (each disc has its own hydration)


# The discs from top to bottom: two unlabelled thoracolumbar ones, the five labelled levels, then the S1/S2
# remnant (a thin dark line in most patients, a full disc where S1 is lumbarised).
DISCS: Final = ("t11_t12", "t12_l1", *LEVELS, "s1_s2")
FIRST_LABELLED: Final = 2
LABELLED: Final = slice(FIRST_LABELLED, FIRST_LABELLED + len(LEVELS))
N_TISSUES: Final = Tissue.NUCLEUS + len(DISCS)
TRANSITIONAL_RATE: Final = 0.06  # share of patients with a lumbarised S1 (an L6, as radiologists say)
# Chance that a disc is degenerated (dark and thin), from T11/T12 down to S1/S2: highest at the bottom.
DEGENERATION_RATE: Final = (0.05, 0.05, 0.08, 0.12, 0.2, 0.35, 0.4, 0.0)


@dataclass(frozen=True)
class Anatomy:
    """One study's spine: pose in the scanner, shape, and the narrowing of each of the 25 targets."""

    rotation: np.ndarray  # (3, 3): columns are the anatomy axes (left, posterior, superior) in patient space
    origin: np.ndarray  # (3,): patient position of the lordosis apex on the spine axis
    radius: float  # radius of curvature of the lordosis (mm)
    disc_s: np.ndarray  # (8,) s of the disc centres, top (T11/T12) to bottom (S1/S2)
    disc_h: np.ndarray  # (8,) disc heights
    scale: float  # overall size factor of this patient
    narrowing: np.ndarray  # (5 conditions, 8 discs) in CONDITIONS order; 0 at the unlabelled discs
    hydration: np.ndarray  # (8,) 0..1: how bright each disc's nucleus is on T2 (1 = healthy)
    canal: float = 1.0  # width factor of the canal (a congenitally narrow or wide one)
    scoliosis: tuple[float, float, float] = (0.0, 200.0, 0.0)  # (amplitude mm, wavelength mm, phase rad)

    def lateral(self, s: np.ndarray | float) -> np.ndarray:
        """Sideways shift (mm, to the left) of the spine axis at height s: the scoliosis."""
        amplitude, wavelength, phase = self.scoliosis
        return np.float32(amplitude) * np.sin(np.float32(2.0 * np.pi / wavelength) * s + np.float32(phase))

    # Derived dimensions (mm), all proportional to `scale`.
    @property
    def body_w(self) -> float:
        return 21.0 * self.scale

    @property
    def body_d(self) -> float:
        return 15.0 * self.scale

    @property
    def canal_w(self) -> float:
        return 8.0 * self.scale * self.canal

    @property
    def canal_ap(self) -> float:
        return 7.0 * self.scale * self.canal

    @property
    def canal_v(self) -> float:
        return self.body_d + 1.0 * self.scale + self.canal_ap

    @property
    def recess_u(self) -> float:
        return 8.5 * self.scale

    @property
    def recess_v(self) -> float:
        return self.canal_v - 3.0 * self.scale

    @property
    def recess_axes(self) -> tuple[float, float]:
        """Semi-axes (lateral, AP) of a normal lateral recess."""
        return 4.5 * self.scale, 3.5 * self.scale

    @property
    def foramen_u(self) -> float:
        return 20.0 * self.scale

    @property
    def foramen_v(self) -> float:
        # Just behind the posterolateral corner of the disc, as on a parasagittal slice.
        back = self.body_d * (1.0 - (self.foramen_u / self.body_w) ** 3) ** (1.0 / 3.0)
        return back + 0.9 * self.foramen_axes[1]

    @property
    def foramen_axes(self) -> tuple[float, float, float]:
        """Semi-axes (lateral, AP, craniocaudal) of a normal foramen."""
        return 5.5 * self.scale, 5.0 * self.scale, 9.0 * self.scale

    @property
    def foramen_ds(self) -> float:
        return 3.0 * self.scale  # the foramen's centre lies a little above the disc centre

    def lumen_radius(self, condition: str) -> float:
        """Smallest semi-axis of the normal open space at a condition's target (what a lesion narrows)."""
        if condition == "spinal_canal_stenosis":
            return self.canal_ap
        return self.foramen_axes[1] if "foraminal" in condition else self.recess_axes[1]

    # ---- coordinates -------------------------------------------------------------------------------------
    def _straight(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patient points (..., 3) -> float32 anatomy-frame coordinates x, y, z, component by component
        (an (N, 3) @ (3, 3) matmul is many times slower)."""
        p = np.asarray(points, dtype=np.float32)
        d = [p[..., i] - np.float32(self.origin[i]) for i in range(3)]
        r = self.rotation.astype(np.float32)
        x, y, z = (d[0] * r[0, i] + d[1] * r[1, i] + d[2] * r[2, i] for i in range(3))
        return x, y, z

    def to_patient(self, u: np.ndarray | float, v: np.ndarray | float, s: np.ndarray | float) -> np.ndarray:
        """Curved spine coordinates -> patient points (..., 3); `tissue` does the inverse per pixel."""
        u, v, s = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (u, v, s)))
        phi, d = s / self.radius, self.radius - v
        q = np.stack([u + self.lateral(s), self.radius - d * np.cos(phi), d * np.sin(phi)], axis=-1)
        return q @ self.rotation.T + self.origin

    def target_point(self, condition: str, level: str) -> np.ndarray:
        """Patient position (3,) of the place a radiologist marks for (condition, level)."""
        s = self.disc_s[DISCS.index(level)]
        side = -1.0 if condition.startswith("right_") else 1.0  # left is +x in LPS
        if condition == "spinal_canal_stenosis":
            return self.to_patient(0.0, self.canal_v, s)
        if "foraminal" in condition:
            return self.to_patient(side * self.foramen_u, self.foramen_v, s + self.foramen_ds)
        return self.to_patient(side * self.recess_u, self.recess_v, s)

    # ---- tissue ------------------------------------------------------------------------------------------
    def tissue(self, points: np.ndarray) -> np.ndarray:
        """Tissue code (uint8) at each patient point (..., 3); float32 arithmetic for speed.

        Patient -> straight anatomy frame (x, y, z) -> curved frame: v = R - |(R - y, z)|, s = R * angle.
        """
        shape = points.shape[:-1]
        x, y, z = (c.ravel() for c in self._straight(points))
        labels = self._trunk(x, y)
        dy = self.radius - y
        v = self.radius - np.hypot(dy, z)
        k = self.scale
        # Only the spine's neighbourhood needs the detailed model.
        near = np.flatnonzero(
            (np.abs(x) < 48.0 * k + abs(self.scoliosis[0]))
            & (v > -self.body_d - 14.0 * k)
            & (v < self.canal_v + 52.0 * k)
        )
        s = self.radius * np.arctan2(z[near], dy[near])
        u = x[near] - self.lateral(s)
        labels[near] = self._spine(u, v[near], s, labels[near])
        return labels.reshape(shape)

    def _trunk(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Air outside the body, subcutaneous fat under the skin, soft tissue inside (straight frame)."""
        k = self.scale
        half_w, half_ap, fat = 140.0 * k, 105.0 * k, 14.0 * k
        y = y - (self.canal_v + self.canal_ap + 62.0 * k - half_ap)
        inside = (x / half_w) ** 2 + (y / half_ap) ** 2 < 1.0
        deep = (x / (half_w - fat)) ** 2 + (y / (half_ap - fat)) ** 2 < 1.0
        labels = np.full(len(x), Tissue.AIR, dtype=np.uint8)
        labels[inside] = Tissue.FAT
        labels[deep] = Tissue.SOFT
        return labels

    def _spine(self, u: np.ndarray, v: np.ndarray, s: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Paint muscles, bone, discs, canal, recesses and foramina over `labels` (painter's order)."""
        k, au = self.scale, np.abs(u)
        ascending = self.disc_s[::-1]
        disc = len(DISCS) - 1 - np.searchsorted((ascending[1:] + ascending[:-1]) / 2.0, s)
        ds = s - self.disc_s[disc].astype(np.float32)
        half_h = (self.disc_h[disc] / 2.0).astype(np.float32)
        narrow = self.narrowing[:, disc].astype(np.float32)  # (5 conditions, points)
        back = self.canal_v + self.canal_ap  # posterior wall of the canal

        paraspinal = ((au - 24.0 * k) / (17.0 * k)) ** 2 + ((v - back - 22.0 * k) / (20.0 * k)) ** 2 < 1.0
        widen = 1.0 + np.clip(-s / 120.0, 0.0, 1.0)  # psoas grows towards the pelvis
        psoas = ((au - 30.0 * k) / (8.0 * k * widen)) ** 2 + ((v + 2.0 * k) / (9.0 * k * widen)) ** 2 < 1.0
        labels[paraspinal | psoas] = Tissue.MUSCLE

        # Posterior elements: pedicles/articular pillars lateral to the canal, laminae and spinous processes
        # behind it, with ligaments (flavum, interspinous) in the gaps at each disc level.
        labels[(au > 13.5 * k) & (au < self.foramen_u + 7.0 * k) & (v > 0.0) & (v < back + 6.0 * k)] = (
            Tissue.MARROW
        )
        arch = ((au <= 13.5 * k) & (v > back + 0.5 * k) & (v < back + 7.0 * k)) | (
            (au < 3.0 * k) & (v >= back + 7.0 * k) & (v < back + 32.0 * k)
        )
        gap = np.abs(ds - 2.0 * k) < 4.0 * k
        labels[arch & ~gap] = Tissue.MARROW
        labels[arch & gap] = Tissue.CORTEX

        # Vertebral bodies (rounded boxes with a cortical rim and endplates) and discs.
        xb, yb = au / self.body_w, np.abs(v) / self.body_d
        section = xb**3 + yb**3
        in_disc = np.abs(ds) < half_h
        body = (section < 1.0) & ~in_disc
        labels[body] = Tissue.MARROW
        labels[body & ((section > (1.0 - 1.5 * k / self.body_d) ** 3) | (np.abs(ds) < half_h + 1.2 * k))] = (
            Tissue.CORTEX
        )
        labels[in_disc & (section < 1.05)] = Tissue.ANNULUS
        nucleus = in_disc & (np.abs(ds) < 0.6 * half_h) & (xb**2 + yb**2 < 0.36)
        labels[nucleus] = (Tissue.NUCLEUS + disc[nucleus]).astype(np.uint8)

        # Canal: epidural fat around the dural sac and its lateral recesses. The normal lumen is painted as
        # lesion first, then the narrowed lumen as CSF, so what the narrowing takes shows as lesion.
        at_disc = np.exp(-0.5 * (ds / (half_h + 2.0 * k)) ** 4)
        cv, du, dv = v - self.canal_v, au - self.recess_u, v - self.recess_v
        ru, rv = self.recess_axes
        bony = ((u / (self.canal_w + 2.5 * k)) ** 2 + (cv / (self.canal_ap + 2.0 * k)) ** 2 < 1.0) | (
            (du / (ru + k)) ** 2 + (dv / (rv + k)) ** 2 < 1.0
        )
        labels[bony] = Tissue.FAT
        lumen = ((u / self.canal_w) ** 2 + (cv / self.canal_ap) ** 2 < 1.0) | (
            (du / ru) ** 2 + (dv / rv) ** 2 < 1.0
        )
        labels[lumen] = Tissue.LESION
        central = narrow[CONDITIONS.index("spinal_canal_stenosis")] * at_disc
        recess = (
            np.where(
                u > 0.0,
                narrow[CONDITIONS.index("left_subarticular_stenosis")],
                narrow[CONDITIONS.index("right_subarticular_stenosis")],
            )
            * at_disc
        )
        csf = (
            (u / (self.canal_w * (1.0 - 0.25 * central))) ** 2 + (cv / (self.canal_ap * (1.0 - central))) ** 2
            < 1.0
        ) | ((du / (ru * (1.0 - recess))) ** 2 + (dv / (rv * (1.0 - recess))) ** 2 < 1.0)
        labels[csf] = Tissue.CSF
        labels[csf & ((du - k) ** 2 + dv**2 < (1.6 * k) ** 2)] = Tissue.NERVE  # traversing root

        # Foramina: a fat-filled keyhole with the exiting root in its upper part; narrowing comes from the
        # disc (front, below), so the open part shrinks and moves back and up.
        fu, fv, fs = au - self.foramen_u, v - self.foramen_v, ds - self.foramen_ds
        a_u, a_v, a_s = self.foramen_axes
        foramen = np.where(
            u > 0.0,
            narrow[CONDITIONS.index("left_neural_foraminal_narrowing")],
            narrow[CONDITIONS.index("right_neural_foraminal_narrowing")],
        )
        lateral = (fu / a_u) ** 2
        labels[lateral + (fv / a_v) ** 2 + (fs / a_s) ** 2 < 1.0] = Tissue.LESION
        open_ = (
            lateral
            + ((fv - 0.5 * a_v * foramen) / (a_v * (1.0 - foramen))) ** 2
            + ((fs - 0.3 * a_s * foramen) / (a_s * (1.0 - 0.5 * foramen))) ** 2
            < 1.0
        )
        labels[open_] = Tissue.FAT
        labels[open_ & ((fv + 0.5 * k) ** 2 + (fs - 3.5 * k) ** 2 < (1.7 * k) ** 2)] = Tissue.NERVE
        return labels


def sample_anatomy(rng: np.random.Generator, narrowing: np.ndarray) -> Anatomy:
    """Draw a patient: size, vertebra and disc heights, lordosis, scoliosis, pose, degenerated discs.

    `narrowing` holds the 25 targets' lumen shares taken by a lesion (labels.narrowing_of of the latent
    severities) in LABEL_COLUMNS order (condition-major).
    """
    n = len(DISCS)
    scale = rng.uniform(0.88, 1.12)
    body_h = 26.0 * scale * rng.uniform(0.95, 1.05) * rng.uniform(0.93, 1.07, n - 1)
    disc_h = np.array([7.5, 8.0, 9.0, 9.5, 10.0, 10.5, 9.0, 2.0]) * scale * rng.uniform(0.85, 1.15, n)
    hydration = rng.uniform(0.6, 1.0, n)
    degenerated = rng.random(n) < np.asarray(DEGENERATION_RATE)
    hydration[degenerated] = rng.uniform(0.02, 0.3, int(degenerated.sum()))
    disc_h[degenerated] *= rng.uniform(0.5, 0.8, int(degenerated.sum()))
    hydration[-1] = 0.05  # the S1/S2 remnant has no nucleus to speak of ...
    if rng.random() < TRANSITIONAL_RATE:  # ... unless S1 is lumbarised
        disc_h[-1], hydration[-1] = 7.5 * scale * rng.uniform(0.8, 1.1), rng.uniform(0.3, 0.9)
    disc_s = np.concatenate([[0.0], -np.cumsum(body_h + (disc_h[:-1] + disc_h[1:]) / 2.0)])
    bottom = FIRST_LABELLED + len(LEVELS) - 1
    disc_s -= (disc_s[FIRST_LABELLED] + disc_s[bottom]) / 2.0  # s = 0 halfway between L1/L2 and L5/S1
    lumen = np.zeros((len(CONDITIONS), n))
    lumen[:, LABELLED] = np.asarray(narrowing, dtype=np.float64).reshape(len(CONDITIONS), len(LEVELS))
    angles = [rng.uniform(-6.0, 6.0), rng.uniform(-3.0, 3.0), rng.uniform(-4.0, 4.0)]
    scoliosis = (rng.normal(0.0, 2.5), rng.uniform(150.0, 300.0), rng.uniform(0.0, 2.0 * np.pi))
    return Anatomy(
        rotation=Rotation.from_euler("xyz", angles, degrees=True).as_matrix(),
        origin=np.array([rng.uniform(-20.0, 20.0), rng.uniform(-30.0, 10.0), rng.uniform(-60.0, 60.0)]),
        radius=rng.uniform(180.0, 500.0),
        disc_s=disc_s,
        disc_h=disc_h,
        scale=scale,
        narrowing=lumen,
        hydration=hydration,
        canal=rng.uniform(0.88, 1.12),
        scoliosis=scoliosis,
    )
