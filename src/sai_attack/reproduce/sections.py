"""The experiments of the paper's Section 4, in the order the reproduction fills them.

Each :class:`~sai_attack.reproduce.plan.Section` declares the attack runs it reads and fills its
tables and figures; the attack runs of a reproduction are the union of these declarations.
"""

from __future__ import annotations

from sai_attack.reproduce.ability import ROBUSTNESS, TABLE1
from sai_attack.reproduce.analyses import FIGURE2, VISUAL
from sai_attack.reproduce.beyond import BEYOND
from sai_attack.reproduce.detectability import TABLE2, TABLE4
from sai_attack.reproduce.plan import Section

SECTIONS: tuple[Section, ...] = (TABLE1, ROBUSTNESS, TABLE2, TABLE4, FIGURE2, VISUAL, BEYOND)
"""Table 1; the defenses (Figs. 4-6, Table 3); Table 2; Table 4 and the ablations; Figure 2 and
the texture analysis; the visual comparison (Figs. 1/7); beyond the paper (EoT, transfer
boosters, the control templates, success against detection)."""
