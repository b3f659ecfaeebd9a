"""The drawing of :mod:`devices.ct_phantom`: the labelled map of structure ids, the shapes
painted into it (:class:`Canvas`), and the painter of one slice (:class:`AnatomyBuilder`), whose
order of painting decides which structure lies over which. The anatomy itself is described in
:mod:`devices.ct_phantom`'s docstring.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from scipy import ndimage

from devices.ct_phantom import (
    _MARGIN_PX,
    _TRUNCATE,
    EDGE_SIGMA_PX,
    EdgeInsert,
    PhantomSlice,
    Region,
)

__all__ = ["AnatomyBuilder", "Canvas"]

# Structure ids of the labelled map (uint8), then their tissue class.
OUTSIDE, GAS, LUNG, SUBCUT_FAT, VISCERAL_FAT, MUSCLE, LIVER, SPLEEN = range(8)
KIDNEY, SINUS_FAT, AORTA, IVC, HEART_BLOOD, MYOCARDIUM, BOWEL_WALL = range(8, 15)
BOWEL_FLUID, CSF, TRABECULAR, CORTEX, LUNG_VESSEL, EDGE_ROD, HEPATIC_VESSEL = range(15, 22)
ESOPHAGUS, GALLBLADDER = range(22, 24)
_N_IDS = 24

_AIR, _LUNG, _FAT, _SOFT, _BONE = range(5)
_CLASS_OF = np.full(_N_IDS, _SOFT, dtype=np.uint8)
_CLASS_OF[[OUTSIDE, GAS]] = _AIR
_CLASS_OF[LUNG] = _LUNG
_CLASS_OF[[SUBCUT_FAT, VISCERAL_FAT, SINUS_FAT]] = _FAT
_CLASS_OF[[TRABECULAR, CORTEX, EDGE_ROD]] = _BONE
_CLASS_OF.setflags(write=False)

# Ids whose HU is constant (no texture): where uniform regions and the edge insert may lie.
_HOMOGENEOUS = (LIVER, HEART_BLOOD, GALLBLADDER, AORTA, IVC)
# What the cavity contents of each region may be painted over.
_ABDOMEN_SOFT = (VISCERAL_FAT, BOWEL_WALL, BOWEL_FLUID, GAS, LIVER, SPLEEN, GALLBLADDER)
_THORAX_SOFT = (LUNG, VISCERAL_FAT, LUNG_VESSEL, GAS)
_INSIDE = tuple(k for k in range(_N_IDS) if k not in (OUTSIDE, SUBCUT_FAT))


class Canvas:
    """The labelled map and the painting of shapes into it; coordinates in mm from the centre
    (x to the right, y down), shapes evaluated on their bounding box only."""

    def __init__(self, size: int, pixel_mm: float) -> None:
        self.size = size
        self.px = pixel_mm
        self.ids = np.zeros((size, size), dtype=np.uint8)
        self.coord = (np.arange(size) - (size - 1) / 2) * pixel_mm

    def to_mm(self, index: float) -> float:
        return (index - (self.size - 1) / 2) * self.px

    def to_px(self, mm: float) -> float:
        return mm / self.px + (self.size - 1) / 2

    def _window(self, cx: float, cy: float, r: float) -> tuple[slice, slice]:
        c = (self.size - 1) / 2
        j0 = max(0, math.floor((cx - r) / self.px + c))
        j1 = min(self.size, math.ceil((cx + r) / self.px + c) + 1)
        i0 = max(0, math.floor((cy - r) / self.px + c))
        i1 = min(self.size, math.ceil((cy + r) / self.px + c) + 1)
        return slice(i0, max(i0, i1)), slice(j0, max(j0, j1))

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, angle_deg: float = 0.0,
                power: float = 2.0) -> tuple[slice, slice, np.ndarray]:
        """A filled (super-)ellipse: its window and the bool mask inside that window."""
        rx, ry = max(rx, 1e-3), max(ry, 1e-3)
        sy, sx = self._window(cx, cy, max(rx, ry))
        x = self.coord[sx][None, :] - cx
        y = self.coord[sy][:, None] - cy
        a = math.radians(angle_deg)
        u = (x * math.cos(a) + y * math.sin(a)) / rx
        v = (-x * math.sin(a) + y * math.cos(a)) / ry
        if power == 2.0:
            inside = u * u + v * v <= 1.0
        else:
            inside = np.abs(u) ** power + np.abs(v) ** power <= 1.0
        return sy, sx, inside

    def paint(self, shape: tuple[slice, slice, np.ndarray], new_id: int,
              over: Iterable[int]) -> None:
        """Set ``new_id`` where the shape covers one of the ids in ``over``."""
        sy, sx, inside = shape
        allowed = np.zeros(_N_IDS, dtype=bool)
        allowed[list(over)] = True
        window = self.ids[sy, sx]
        window[inside & allowed[window]] = new_id

    def at(self, x: float, y: float) -> int:
        i, j = round(self.to_px(y)), round(self.to_px(x))
        if not (0 <= i < self.size and 0 <= j < self.size):
            return OUTSIDE
        return int(self.ids[i, j])


class AnatomyBuilder:
    """Draws one slice; the order of painting decides which structure lies over which."""

    def __init__(
        self,
        size: int,
        pixel_mm: float,
        rng: np.random.Generator,
        region: Region,
        seed: int,
    ) -> None:
        self.cv = Canvas(size, pixel_mm)
        self.rng = rng
        self.region = region
        self.seed = seed
        self.base = np.zeros(_N_IDS)  # HU of each id
        self.amp = np.zeros((3, _N_IDS))  # texture SD (HU) of each id: coarse, medium, fine
        self.cortex_mm = float(rng.uniform(1.0, 2.5))

    def u(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi))

    def build(self) -> PhantomSlice | None:
        self._values()
        self._body()
        if self.region == "thorax":
            self._thorax()
        else:
            self._abdomen()
        self._spine()
        insert = self._edge_rod()
        hu = self._render()
        return self._labels(hu, insert)

    # -- values -------------------------------------------------------------------------------

    def _values(self) -> None:
        u, b, amp = self.u, self.base, self.amp
        self.contrast = bool(self.rng.random() < 0.5)
        b[OUTSIDE] = b[GAS] = -1000.0
        b[LUNG] = u(-870, -820)
        b[SUBCUT_FAT] = u(-110, -85)
        b[VISCERAL_FAT] = b[SUBCUT_FAT] + u(-8, 8)
        b[SINUS_FAT] = b[VISCERAL_FAT]
        b[MUSCLE] = u(40, 60)
        b[BOWEL_WALL] = u(30, 50)
        b[BOWEL_FLUID] = u(0, 30)
        b[GALLBLADDER] = u(0, 20)
        b[CSF] = u(5, 20)
        b[ESOPHAGUS] = b[MUSCLE] + u(-10, 5)
        b[TRABECULAR] = u(200, 400)
        cortical = u(1000, 1500)
        # A shell thinner than a pixel is drawn one pixel thick, diluted to its area fraction.
        dilution = min(1.0, self.cortex_mm / self.cv.px)
        b[CORTEX] = b[TRABECULAR] + (cortical - b[TRABECULAR]) * dilution
        b[EDGE_ROD] = u(1000, 1400)
        if self.contrast:
            b[AORTA] = u(150, 300)
            b[IVC] = u(90, min(b[AORTA], 200.0))
            b[HEART_BLOOD] = b[AORTA] * u(0.8, 1.0)
            b[HEPATIC_VESSEL] = u(120, 200)
            b[LIVER] = u(90, 120)
            b[SPLEEN] = u(100, 130)
            b[KIDNEY] = u(150, 220)
            b[MYOCARDIUM] = u(80, 120)
            b[BOWEL_WALL] += u(10, 30)
        else:
            b[AORTA] = u(35, 50)
            b[IVC] = b[AORTA] + u(-5, 5)
            b[HEART_BLOOD] = b[AORTA] + u(-3, 3)
            b[LIVER] = u(50, 70)
            b[HEPATIC_VESSEL] = b[LIVER] - u(10, 25)
            b[SPLEEN] = u(40, 52)
            b[KIDNEY] = u(28, 40)
            b[MYOCARDIUM] = u(40, 55)
        b[LUNG_VESSEL] = b[HEART_BLOOD] * u(0.7, 1.0)
        coarse, medium, fine = amp
        coarse[[SUBCUT_FAT, VISCERAL_FAT]] = u(3, 8)
        medium[[SUBCUT_FAT, VISCERAL_FAT]] = u(4, 10)
        coarse[MUSCLE], medium[MUSCLE] = u(3, 7), u(3, 7)
        coarse[[SPLEEN, KIDNEY, MYOCARDIUM]] = u(2, 5)
        medium[[SPLEEN, KIDNEY]] = u(2, 4)
        medium[[BOWEL_WALL, BOWEL_FLUID]] = u(3, 8)
        medium[LUNG], fine[LUNG] = u(10, 25), u(15, 35)
        medium[TRABECULAR], fine[TRABECULAR] = u(15, 30), u(30, 60)

    # -- body wall ----------------------------------------------------------------------------

    def _body(self) -> None:
        cv, u = self.cv, self.u
        fov = cv.size * cv.px
        self.a = u(125.0, min(200.0, 0.4 * fov))  # half width, mm
        self.b = self.a * (u(0.6, 0.75) if self.region == "thorax" else u(0.62, 0.8))
        self.cy = u(-0.02, 0.02) * fov
        self.p_back = u(2.3, 3.2)
        self.harm = [(k, u(-0.02, 0.02), u(0, 2 * math.pi)) for k in range(2, 6)]
        x = cv.coord[None, :]
        y = cv.coord[:, None] - self.cy
        xa, yb = np.abs(x / self.a), np.abs(y / self.b)
        phi = np.arctan2(y / self.b, x / self.a)
        p = np.where(y > 0, self.p_back, 2.0)
        rho = (xa**p + yb**p) ** (1.0 / p)
        body = rho <= self._perturb(phi)
        cv.ids[body] = SUBCUT_FAT
        depth = ndimage.distance_transform_edt(body) * cv.px  # mm from the skin
        theta = np.arctan2(y, x)  # image angle; +pi/2 points to the back
        scale = self.a / 165.0  # fat and muscle grow with the body
        self.fat_mm = u(4, 35) * scale
        fat_harm = [(k, u(-0.25, 0.25), u(0, 2 * math.pi)) for k in (1, 2, 3)]
        t_fat = self.fat_mm * (1 + sum(c * np.cos(k * theta + s) for k, c, s in fat_harm))
        t_fat = np.maximum(t_fat, 3.0)
        self.wall_mm = u(8, 15) * scale
        self.back_mm = u(35, 55) * scale
        front_mm = u(5, 20) if self.region == "thorax" else 0.0
        back = np.maximum(np.sin(theta), 0.0) ** 4
        front = np.maximum(-np.sin(theta), 0.0) ** 2
        t_wall = self.wall_mm + self.back_mm * back + front_mm * front
        cv.ids[body & (depth >= t_fat)] = MUSCLE
        self.cavity = body & (depth >= t_fat + t_wall)
        cv.ids[self.cavity] = LUNG if self.region == "thorax" else VISCERAL_FAT
        rows = np.flatnonzero(self.cavity.any(axis=1))
        cols = np.flatnonzero(self.cavity.any(axis=0))
        self.cav_y0, self.cav_y1 = cv.to_mm(rows[0]), cv.to_mm(rows[-1])
        self.cav_x0, self.cav_x1 = cv.to_mm(cols[0]), cv.to_mm(cols[-1])
        self.cav_w = self.cav_x1 - self.cav_x0
        self.cav_h = self.cav_y1 - self.cav_y0
        self.cav_cx = (self.cav_x0 + self.cav_x1) / 2
        self.cav_cy = (self.cav_y0 + self.cav_y1) / 2
        mid = cv.size // 2
        back_rows = np.flatnonzero(self.cavity[:, mid])
        back_y = cv.to_mm(back_rows[-1]) if back_rows.size else self.cav_y1
        self.vb_rx = u(15, 20) if self.region == "thorax" else u(19, 25)
        self.vb_ry = self.vb_rx * u(0.7, 0.85)
        self.vb_cx = u(-3, 3)
        self.vb_cy = back_y - u(0.1, 0.4) * self.vb_ry
        self.vb_top = self.vb_cy - self.vb_ry
        self.vb_pad = u(2, 5)

    def _beside_spine(self, r: float, angle_deg: float) -> tuple[float, float]:
        """Centre of a vessel of radius ``r`` touching the paravertebral fat, ``angle_deg`` from
        straight in front of the vertebral body towards the patient's left."""
        a = math.radians(angle_deg)
        gap = self.vb_pad + r + self.u(0.5, 3)
        x = self.vb_cx + (self.vb_rx + gap) * math.sin(a)
        y = self.vb_cy - (self.vb_ry + gap) * math.cos(a)
        return x, y

    def _perturb(self, phi: np.ndarray | float) -> np.ndarray:
        angle = np.asarray(phi, dtype=np.float64)
        out = np.ones_like(angle)
        for k, c, s in self.harm:
            out += c * np.cos(k * angle + s)
        return out

    def _skin_mm(self, theta: float) -> float:
        """Distance (mm) from the body centre to the skin along image angle ``theta``."""
        dx, dy = math.cos(theta), math.sin(theta)
        p = self.p_back if dy > 0 else 2.0
        rho = (abs(dx / self.a) ** p + abs(dy / self.b) ** p) ** (1.0 / p)
        return float(self._perturb(math.atan2(dy / self.b, dx / self.a))) / rho

    def _bone(
        self, cx: float, cy: float, rx: float, ry: float, angle: float, over: Iterable[int]
    ) -> None:
        """A bone cross-section: cortical shell round trabecular bone."""
        over = tuple(over)
        self.cv.paint(self.cv.ellipse(cx, cy, rx, ry, angle), CORTEX, over)
        shell = max(self.cortex_mm, self.cv.px)
        if min(rx, ry) > shell:
            inner = self.cv.ellipse(cx, cy, rx - shell, ry - shell, angle)
            self.cv.paint(inner, TRABECULAR, (CORTEX,))

    def _ribs(self, angles: Iterable[float], over: Iterable[int]) -> None:
        over = tuple(over)
        for theta in angles:
            rx, ry = self.u(6, 10), self.u(3.5, 5.5)
            wall = self.wall_mm + self.back_mm * max(math.sin(theta), 0.0) ** 4
            depth = self.fat_mm + wall - ry - self.u(-1, 3)
            r = self._skin_mm(theta) - max(depth, self.fat_mm + ry)
            cx, cy = r * math.cos(theta), self.cy + r * math.sin(theta)
            self._bone(cx, cy, rx, ry, math.degrees(theta) + 90, over)

    # -- spine --------------------------------------------------------------------------------

    def _spine(self) -> None:
        cv, u = self.cv, self.u
        over = _INSIDE
        # Paravertebral fat round the vertebral body keeps organs and lungs off the bone.
        pad = self.vb_pad
        cv.paint(
            cv.ellipse(self.vb_cx, self.vb_cy, self.vb_rx + pad, self.vb_ry + pad),
            VISCERAL_FAT,
            (LUNG, LUNG_VESSEL, GAS, BOWEL_WALL, BOWEL_FLUID, LIVER, SPLEEN, KIDNEY),
        )
        canal_r = u(6, 9)
        canal_cy = self.vb_cy + self.vb_ry + canal_r + u(0.5, 2)
        lamina = u(4, 7)
        arch_r = canal_r + lamina
        skin_back = self.cy + self._skin_mm(math.pi / 2)
        room = skin_back - self.fat_mm - 8.0 - canal_cy
        sp_len = min(u(25, 40), max(room, arch_r + 2.0))
        sp_rx = u(3, 5)
        # Processes first, then the arch, then the vertebral body over the arch's front.
        self._bone(self.vb_cx, canal_cy + sp_len / 2, sp_rx, sp_len / 2, u(-5, 5), (MUSCLE,))
        tp_len = u(15, 28) if self.region == "thorax" else u(20, 35)
        tp_ry = u(3.5, 6)
        for side in (-1, 1):
            tcx = self.vb_cx + side * (canal_r + tp_len / 2)
            self._bone(tcx, canal_cy - u(0, 4), tp_len / 2, tp_ry, side * u(5, 20), (MUSCLE,))
        self._bone(self.vb_cx, canal_cy, arch_r, arch_r, 0.0, over)
        self._bone(self.vb_cx, self.vb_cy, self.vb_rx, self.vb_ry, 0.0, over)
        cv.paint(cv.ellipse(self.vb_cx, canal_cy, canal_r, canal_r * u(0.85, 1.0)), CSF, over)

    # -- abdomen ------------------------------------------------------------------------------

    def _abdomen(self) -> None:
        cv, u, rng = self.cv, self.u, self.rng
        fill = (VISCERAL_FAT, BOWEL_WALL, BOWEL_FLUID, GAS)
        for _ in range(int(rng.integers(5, 15))):
            cx = self.cav_cx + u(-0.45, 0.45) * self.cav_w
            cy = self.cav_y0 + u(0.0, 0.7) * self.cav_h
            if cv.at(cx, cy) != VISCERAL_FAT:
                continue
            r = u(8, 20)
            self._loop(cx, cy, r, r * u(0.6, 1.0), u(0, 180), u(2, 3.5), fill)
        if rng.random() < 0.6:
            cx = self.cav_cx + u(0.15, 0.3) * self.cav_w
            cy = self.cav_cy - u(0.1, 0.3) * self.cav_h
            self._loop(cx, cy, u(35, 60), u(25, 45), u(-30, 30), u(3, 5), fill)
        # Always a liver: every slice needs a large homogeneous organ.
        lcx = self.cav_x0 + u(0.22, 0.32) * self.cav_w
        lcy = self.cav_cy - u(0.0, 0.1) * self.cav_h
        lrx, lry = u(0.24, 0.34) * self.cav_w, u(0.38, 0.5) * self.cav_h
        cv.paint(cv.ellipse(lcx, lcy, lrx, lry, u(-20, 20), u(2.0, 3.0)), LIVER, fill)
        for _ in range(int(rng.integers(3, 9))):
            vx, vy = lcx + u(-0.6, 0.6) * lrx, lcy + u(-0.6, 0.6) * lry
            r = u(2, 6)
            cv.paint(cv.ellipse(vx, vy, r, r * u(0.5, 1.0), u(0, 180)), HEPATIC_VESSEL, (LIVER,))
        if rng.random() < 0.35:
            gx, gy = lcx + u(0.3, 0.6) * lrx, lcy - u(0.2, 0.5) * lry
            cv.paint(
                cv.ellipse(gx, gy, u(12, 20), u(10, 16), u(0, 180)), GALLBLADDER, (LIVER, *fill)
            )
        if rng.random() < 0.75:
            sx = self.cav_x1 - u(0.12, 0.2) * self.cav_w
            sy = self.cav_cy + u(0.0, 0.25) * self.cav_h
            cv.paint(cv.ellipse(sx, sy, u(18, 30), u(40, 60), u(20, 45)), SPLEEN, fill)
        organs = (*fill, LIVER, SPLEEN, GALLBLADDER, HEPATIC_VESSEL)
        for side in (-1, 1):
            if rng.random() < 0.85:
                kx = self.vb_cx + side * u(55, 75)
                ky = self.vb_cy + u(-10, 15)
                krx, kry, ka = u(22, 32), u(28, 40), side * u(20, 40)
                cv.paint(cv.ellipse(kx, ky, krx, kry, ka), KIDNEY, organs)
                sinus = cv.ellipse(kx - side * 0.4 * krx, ky, 0.45 * krx, 0.45 * kry, ka)
                cv.paint(sinus, SINUS_FAT, (KIDNEY,))
        if rng.random() < 0.6:
            for side in (-1, 1):
                px = self.vb_cx + side * (self.vb_rx + u(8, 20))
                cv.paint(
                    cv.ellipse(px, self.vb_cy, u(12, 25), u(15, 25), side * u(0, 30)),
                    MUSCLE,
                    organs,
                )
        vessels = (*organs, KIDNEY, SINUS_FAT, MUSCLE)
        ivc_rx = u(10, 16)
        ivc_x, ivc_y = self._beside_spine(ivc_rx, -u(35, 60))
        cv.paint(cv.ellipse(ivc_x, ivc_y, ivc_rx, ivc_rx * u(0.6, 0.9)), IVC, vessels)
        ar = u(9, 14)
        ax, ay = self._beside_spine(ar, u(0, 30))
        cv.paint(cv.ellipse(ax, ay, ar, ar), AORTA, vessels)
        if rng.random() < 0.5:
            n = int(rng.integers(2, 5))
            for side in (-1, 1):
                self._ribs(
                    (math.pi / 2 - side * (math.pi / 2 + u(-0.9, 0.9)) for _ in range(n)),
                    (MUSCLE, *vessels),
                )

    def _loop(
        self,
        cx: float,
        cy: float,
        rx: float,
        ry: float,
        angle: float,
        wall_mm: float,
        over: Iterable[int],
    ) -> None:
        """A bowel loop or the stomach: a wall round fluid, gas, or gas over fluid."""
        cv = self.cv
        cv.paint(cv.ellipse(cx, cy, rx, ry, angle), BOWEL_WALL, over)
        lumen = cv.ellipse(cx, cy, rx - wall_mm, ry - wall_mm, angle)
        kind = self.rng.random()
        if kind < 0.55:
            cv.paint(lumen, BOWEL_FLUID, (BOWEL_WALL,))
        elif kind < 0.8:
            cv.paint(lumen, GAS, (BOWEL_WALL,))
        else:
            cv.paint(lumen, BOWEL_FLUID, (BOWEL_WALL,))
            sy, sx, inside = lumen
            level = cy + self.u(-0.6, 0.3) * min(rx, ry)  # gas rises to the front (top)
            above = (cv.coord[sy] < level)[:, None]
            cv.paint((sy, sx, inside & above), GAS, (BOWEL_FLUID,))

    # -- thorax -------------------------------------------------------------------------------

    def _thorax(self) -> None:
        cv, u, rng = self.cv, self.u, self.rng
        lungs = _THORAX_SOFT
        hx = self.cav_cx + u(0.03, 0.1) * self.cav_w
        hy = self.cav_cy - u(0.05, 0.2) * self.cav_h
        hrx = u(48, 62) * min(max(self.cav_w / 230.0, 0.85), 1.1)
        hry = hrx * u(0.72, 0.85)
        ha = u(-40, -20)
        # Posterior and anterior mediastinum: fat from the heart to the spine and the sternum.
        mid_y = (hy + self.vb_cy) / 2
        cv.paint(
            cv.ellipse((hx + self.vb_cx) / 2, mid_y, u(22, 32), (self.vb_cy - hy) / 2 + 10),
            VISCERAL_FAT,
            lungs,
        )
        cv.paint(
            cv.ellipse(
                hx - 0.3 * hrx, self.cav_y0 + 0.15 * self.cav_h, u(15, 25), 0.2 * self.cav_h
            ),
            VISCERAL_FAT,
            lungs,
        )
        fat = u(3, 10)
        cv.paint(cv.ellipse(hx, hy, hrx + fat, hry + fat, ha), VISCERAL_FAT, lungs)
        cv.paint(cv.ellipse(hx, hy, hrx, hry, ha), MYOCARDIUM, (*lungs, VISCERAL_FAT))
        myo = u(7, 11)
        pool = cv.ellipse(hx - u(0, 0.15) * hrx, hy, hrx - myo - 3, hry - myo, ha)
        cv.paint(pool, HEART_BLOOD, (MYOCARDIUM,))
        ar = u(10, 14)
        ax, ay = self._beside_spine(ar, u(30, 60))
        cv.paint(cv.ellipse(ax, ay, ar + u(2, 4), ar + 3), VISCERAL_FAT, lungs)
        cv.paint(cv.ellipse(ax, ay, ar, ar), AORTA, (*lungs, VISCERAL_FAT, MUSCLE))
        er = u(7, 10)
        ex, ey = self.vb_cx + u(-8, 5), self.vb_top - er - u(3, 12)
        cv.paint(cv.ellipse(ex, ey, er, er * u(0.7, 1.0)), ESOPHAGUS, (*lungs, VISCERAL_FAT))
        if rng.random() < 0.4:
            cv.paint(cv.ellipse(ex, ey, u(1.5, 3), u(1.5, 3)), GAS, (ESOPHAGUS,))
        if rng.random() < 0.35:  # the liver dome under the right lung base
            lr = u(30, 70)
            lx = self.cav_x0 + u(0.15, 0.35) * self.cav_w
            cv.paint(
                cv.ellipse(lx, self.cav_cy + u(0.0, 0.2) * self.cav_h, lr, lr * u(0.8, 1.1)),
                LIVER,
                lungs,
            )
        # Sternum in front, then ribs round the wall, away from the spine and the sternum.
        srx, sry = u(12, 20), u(5, 8)
        sy = self.cy - self._skin_mm(-math.pi / 2) + self.fat_mm + sry + u(1, 4)
        self._bone(0.0, sy, srx, sry, 0.0, (MUSCLE, *lungs, VISCERAL_FAT))
        n = int(rng.integers(8, 13))
        angles = []
        for k in range(n):
            theta = -math.pi / 2 + (k + 0.5 + u(-0.3, 0.3)) * 2 * math.pi / n
            off_spine = abs(math.remainder(theta - math.pi / 2, 2 * math.pi)) > 0.5
            off_sternum = abs(math.remainder(theta + math.pi / 2, 2 * math.pi)) > 0.35
            if off_spine and off_sternum:
                angles.append(theta)
        self._ribs(angles, (MUSCLE, *lungs))
        self._lung_structures(hx, hy, hrx)

    def _lung_structures(self, hx: float, hy: float, hrx: float) -> None:
        cv, u, rng = self.cv, self.u, self.rng
        hila = ((hx - 1.1 * hrx, hy + 0.2 * hrx), (hx + 0.6 * hrx, hy + 0.3 * hrx))
        n_vessels = int(rng.integers(40, 90))
        cx = self.cav_cx + rng.uniform(-0.5, 0.5, 4 * n_vessels) * self.cav_w
        cy = self.cav_cy + rng.uniform(-0.5, 0.5, 4 * n_vessels) * self.cav_h
        radius = rng.uniform(0.6, 1.0, 4 * n_vessels)
        aspect = rng.uniform(1.0, 3.0, 4 * n_vessels)
        angle = rng.uniform(0, 180, 4 * n_vessels)
        drawn = 0
        for x, y, r, k, a in zip(cx, cy, radius, aspect, angle, strict=True):
            if drawn == n_vessels:
                break
            if cv.at(x, y) != LUNG:
                continue
            hilum = min(math.hypot(x - hxy[0], y - hxy[1]) for hxy in hila)
            vr = max(0.7, r * 5.0 * math.exp(-hilum / 50.0))
            cv.paint(cv.ellipse(x, y, vr * k, vr, a), LUNG_VESSEL, (LUNG,))
            drawn += 1
        for _ in range(int(rng.integers(2, 7))):
            bx, by = hila[int(rng.integers(2))]
            bx, by = bx + u(-25, 25), by + u(-25, 25)
            if cv.at(bx, by) != LUNG:
                continue
            br = u(2.5, 6)
            cv.paint(cv.ellipse(bx, by, br, br), ESOPHAGUS, (LUNG, LUNG_VESSEL))
            cv.paint(cv.ellipse(bx, by, br - 1.5, br - 1.5), GAS, (ESOPHAGUS,))

    # -- edge insert, rendering, labels -------------------------------------------------------

    def _edge_rod(self) -> EdgeInsert:
        """Put the rod where the largest homogeneous organ is deepest."""
        cv = self.cv
        best: tuple[float, int, int, int] | None = None
        for k in _HOMOGENEOUS:
            depth, (r0, c0) = self._depth(k)
            if depth is None:
                continue
            i, j = (int(v) for v in np.unravel_index(int(np.argmax(depth)), depth.shape))
            d = float(depth[i, j])
            if best is None or d > best[0]:
                best = (d, k, i + r0, j + c0)
        if best is None:  # cannot happen: every slice has an aorta and a liver or a heart
            raise AssertionError("ct phantom: no homogeneous organ drawn")
        d, organ, i, j = best
        room = d - _MARGIN_PX  # px free round the deepest point
        radius = max(self.u(4, 7) / cv.px, 2.0)
        radius = max(min(radius, room / 3), 1.5)
        ci, cj = i + self.u(-0.5, 0.5), j + self.u(-0.5, 0.5)
        jitter = math.hypot(ci - i, cj - j)
        window = cv.ellipse(cv.to_mm(cj), cv.to_mm(ci), radius * cv.px, radius * cv.px)
        cv.paint(window, EDGE_ROD, (organ,))
        return EdgeInsert(
            center_px=(ci, cj),
            radius_px=radius,
            hu_inside=float(self.base[EDGE_ROD]),
            hu_outside=float(self.base[organ]),
            clear_radius_px=max(min(room - jitter, 3 * radius), radius),
            sigma_px=EDGE_SIGMA_PX,
        )

    def _depth(self, k: int) -> tuple[np.ndarray | None, tuple[int, int]]:
        """Distance (px) to the nearest other structure inside id ``k``'s bounding box."""
        mask = self.cv.ids == k
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size == 0:
            return None, (0, 0)
        r0, c0 = rows[0], cols[0]
        crop = np.pad(mask[r0 : rows[-1] + 1, c0 : cols[-1] + 1], 1)
        return ndimage.distance_transform_edt(crop)[1:-1, 1:-1], (int(r0), int(c0))

    def _render(self) -> np.ndarray:
        ids = self.cv.ids
        hu = self.base[ids]
        spectrum = np.fft.rfft2(self.rng.standard_normal(ids.shape))
        fy = np.fft.fftfreq(ids.shape[0])[:, None]
        fx = np.fft.rfftfreq(ids.shape[1])[None, :]
        f2 = fx * fx + fy * fy
        for amp, sigma_mm in zip(self.amp, (15.0, 4.0, 1.2), strict=True):
            sigma = sigma_mm / self.cv.px
            field = np.fft.irfft2(spectrum * np.exp(-2 * math.pi**2 * sigma**2 * f2), s=ids.shape)
            hu += amp[ids] * (field / max(float(field.std()), 1e-12))
        lung = ids == LUNG
        if lung.any():  # dependent (posterior) lung is denser
            gradient = self.u(20, 80) * (self.cv.coord[:, None] - self.cav_cy) / self.cav_h
            hu += np.where(lung, gradient, 0.0)
        np.maximum(hu, -1000.0, out=hu)  # textured lung stays above air
        smoothed = ndimage.gaussian_filter(hu, EDGE_SIGMA_PX, truncate=_TRUNCATE)
        return smoothed.astype(np.float32)

    def _labels(self, hu: np.ndarray, insert: EdgeInsert) -> PhantomSlice | None:
        cv = self.cv
        tissue = _CLASS_OF[cv.ids]
        uniform = []
        ci, cj = insert.center_px
        rows, cols = np.ogrid[: cv.size, : cv.size]
        for k in _HOMOGENEOUS:
            depth, (r0, c0) = self._depth(k)
            if depth is None:
                continue
            core = np.zeros(cv.ids.shape, dtype=bool)
            core[r0 : r0 + depth.shape[0], c0 : c0 + depth.shape[1]] = depth > _MARGIN_PX
            # The rod's edge and its smoothing stay out; beyond, the annulus is homogeneous.
            core &= (rows - ci) ** 2 + (cols - cj) ** 2 > (insert.radius_px + _MARGIN_PX) ** 2
            if core.sum() >= 9:
                uniform.append(core)
        if not uniform:
            return None
        return PhantomSlice(
            hu=hu,
            pixel_mm=cv.px,
            region=self.region,
            contrast=self.contrast,
            seed=self.seed,
            body=cv.ids != OUTSIDE,
            fat=tissue == _FAT,
            soft_tissue=tissue == _SOFT,
            bone=tissue == _BONE,
            lung=tissue == _LUNG,
            air=tissue == _AIR,
            uniform_regions=tuple(uniform),
            edge_insert=insert,
        )
