"""The correction controls of a web session: renumber, shift, merge, split, lesions, all undoable.

Corrections share trame-slicer's undo stack with the segment editor (paint, erase, scissors...), so one Undo
button goes back through strokes and corrections in the order they were made: each correction pushes a
:class:`CorrectionCommand` holding the exact state before it (and, once undone, the state after it).
"""

from __future__ import annotations

from undo_stack import UndoCommand

from ..corrections import Change, Corrections
from ..errors import InputError
from .guard import guarded
from .views import slice_crossing


class CorrectionCommand(UndoCommand):
    def __init__(self, controller: CorrectionsController, change: Change):
        super().__init__()
        self._controller = controller
        self._before = change.before
        self._after = None
        self._text = change.description

    def undo(self) -> None:
        corrections = self._controller.corrections
        if corrections is None:
            return
        if self._after is None:
            self._after = corrections.capture()
        corrections.restore(self._before)
        self._controller.after_restore(f"Undone: {self.text()}")

    def redo(self) -> None:
        corrections = self._controller.corrections
        if corrections is None or self._after is None:
            return
        corrections.restore(self._after)
        self._controller.after_restore(f"Redone: {self.text()}")


class CorrectionsController:
    def __init__(self, session):
        self.session = session
        self.state = session.state
        self.corrections: Corrections | None = None
        self.history: list[str] = []
        ctrl = session.server.controller
        ctrl.ss_renumber = self.renumber
        ctrl.ss_shift = self.shift
        ctrl.ss_merge = self.merge
        ctrl.ss_split_plane = self.split_plane
        ctrl.ss_split_components = self.split_components
        ctrl.ss_add_lesion = self.add_lesion
        session.server.trigger("ss_delete_lesion")(self.delete_lesion)
        session.server.trigger("ss_lesion_class")(self.set_lesion_class)
        ctrl.ss_undo = self.undo
        ctrl.ss_redo = self.redo
        self._connect_undo_stack()

    # --- wiring -----------------------------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.corrections is not None

    @property
    def undo_stack(self):
        return self.session.editor.undo_stack

    def _connect_undo_stack(self) -> None:
        stack = self.undo_stack
        if stack is None:
            return
        for signal in stack.signals():
            signal.connect(self._on_undo_changed)

    def _on_undo_changed(self, *_):
        stack = self.undo_stack
        with self.state:
            self.state.ss_can_undo = bool(stack is not None and stack.can_undo())
            self.state.ss_can_redo = bool(stack is not None and stack.can_redo())

    def attach(self, nodes, ct_node) -> None:
        self.corrections = Corrections.from_result(nodes, ct_node, undo_limit=0, on_change=self._on_change)
        self.history = []

    def detach(self) -> None:
        self.corrections = None
        self.history = []

    def _on_change(self, change: Change) -> None:
        self.history.append(change.description)
        if self.undo_stack is not None:
            self.undo_stack.push(CorrectionCommand(self, change))

    def after_restore(self, text: str) -> None:
        self.session.refresh()
        with self.state:
            self.state.ss_message = text

    def _require(self) -> Corrections:
        if self.corrections is None:
            raise InputError("segment a CT first: there is nothing to correct")
        return self.corrections

    def _done(self, text: str, select: str | None = None) -> None:
        if select:
            self.state.ss_selected = select
        self.session.refresh()
        with self.state:
            self.state.ss_message = text

    # --- lists for the page -------------------------------------------------------------------------------------
    def listing(self) -> tuple[list[dict], list[dict]]:
        if self.corrections is None:
            return [], []
        lesions = self.corrections.lesions()
        vertebrae = []
        for v in self.corrections.vertebrae():
            count = sum(1 for les in lesions if les.get("vertebra") == v["name"])
            vertebrae.append({"id": v["id"], "name": v["name"], "label": v["label"], "color": _hex(v["color"]),
                              "volume_ml": round(v["volume_mm3"] / 1000.0, 2), "lesions": count,
                              "centroid_ras": [round(c, 2) for c in v["centroid_ras"]]})
        shown = [{"id": les.get("id"), "class": les.get("class"), "vertebra": les.get("vertebra") or "-",
                  "score": round(float(les.get("score") or 0.0), 2),
                  "size_mm": round(float(les.get("size_mm") or 0.0), 1),
                  "center_ras": [round(float(c), 2) for c in les["center_ras"]]} for les in lesions]
        return vertebrae, shown

    def update_report(self) -> None:
        if self.corrections is not None:
            self.corrections.update_report()

    # --- actions ------------------------------------------------------------------------------------------------
    def _selected(self, selected: str | None = None) -> str:
        selected = str(selected if selected is not None else self.state.ss_selected or "")
        if not selected:
            raise InputError("select a vertebra in the list first")
        return selected

    @guarded("Renumbering")
    def renumber(self, selected: str | None = None, name: str | None = None):
        corrections = self._require()
        name = str(name if name is not None else self.state.ss_true_name or "").strip()
        if not name:
            raise InputError("choose the true name of the selected vertebra")
        changed = corrections.renumber(self._selected(selected), name)
        text = ", ".join(f"{a}->{b}" for a, b in changed.items()) or "no name changed"
        self._done(f"Renumbered: {text}", select=corrections.segment_id_by_name(name))

    @guarded("Shifting the labels")
    def shift(self, steps: int):
        changed = self._require().shift(int(steps))
        self._done("Shifted: " + (", ".join(f"{a}->{b}" for a, b in changed.items()) or "nothing"))

    @guarded("Merging")
    def merge(self, selected: str | None = None, other: str | None = None):
        other = str(other if other is not None else self.state.ss_merge_with or "")
        if not other:
            raise InputError("choose the segment to merge into the selected one")
        kept = self._require().merge(self._selected(selected), other)
        self._done(f"Merged {other} into {kept}", select=kept)

    @guarded("Splitting")
    def split_plane(self, selected: str | None = None):
        point = slice_crossing(self.session.scene)
        new_id = self._require().split_plane(self._selected(selected), point)
        self._done(f"Split at the slice crossing ({', '.join(f'{c:.1f}' for c in point)}): new part {new_id}",
                   select=new_id)

    @guarded("Splitting")
    def split_components(self, selected: str | None = None):
        new_id = self._require().split_components(self._selected(selected))
        self._done(f"Split into connected parts: new part {new_id}", select=new_id)

    @guarded("Adding a lesion")
    def add_lesion(self, lesion_class: str | None = None, size_mm=None):
        point = slice_crossing(self.session.scene)
        lesion_class = str(lesion_class or self.state.ss_lesion_class)
        try:
            size = float(size_mm if size_mm not in (None, "") else self.state.ss_lesion_size or 10.0)
        except (TypeError, ValueError) as error:
            raise InputError(f"the lesion size must be a number of millimetres, not {size_mm!r}") from error
        lesion = self._require().add_lesion(point, lesion_class, size)
        where = lesion.get("vertebra") or "no vertebra"
        self._done(f"Added lesion {lesion['id']} ({lesion['class']}, {where})")

    @guarded("Deleting the lesion")
    def delete_lesion(self, lesion_id):
        self._require().delete_lesion(lesion_id)
        self._done(f"Deleted lesion {lesion_id}")

    @guarded("Changing the lesion class")
    def set_lesion_class(self, lesion_id, lesion_class):
        lesion = self._require().set_lesion_class(lesion_id, lesion_class)
        self._done(f"Lesion {lesion_id} is now {lesion['class']}")

    @guarded("Undo")
    def undo(self):
        if self.undo_stack is None or not self.undo_stack.can_undo():
            raise InputError("nothing to undo")
        self.undo_stack.undo()
        self.session.schedule_refresh()

    @guarded("Redo")
    def redo(self):
        if self.undo_stack is None or not self.undo_stack.can_redo():
            raise InputError("nothing to redo")
        self.undo_stack.redo()
        self.session.schedule_refresh()


def _hex(color) -> str:
    return "#" + "".join(f"{max(0, min(255, round(255 * float(c)))):02x}" for c in color[:3])
