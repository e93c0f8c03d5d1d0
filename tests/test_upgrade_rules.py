"""The rules ``schemas upgrade`` decides on before it touches anything. Pure."""

from __future__ import annotations

from voyado_sync.spec import InteractionModel, Relation, parse_spec, resolve
from voyado_sync.upgrade import _differing


def _model(name: str, **props: object) -> InteractionModel:
    raw = {
        "schema_id": "repair",
        "unique_key": ["repair_id"],
        "contact": {"column": "email", "key": "email"},
        "properties": props or {"cost": "cost"},
    }
    return resolve(
        model=name,
        unique_id=f"model.shop.{name}",
        relation=Relation("db", "analytics", name),
        spec=parse_spec(name, raw),
        columns={"repair_id": "INTEGER", "email": "VARCHAR", "cost": "INTEGER"},
    )


def test_models_sharing_a_schema_must_define_it_alike() -> None:
    same = [_model("repairs"), _model("repairs_outlet")]
    assert _differing(same) == ""
    segmentable = {"cost": {"column": "cost", "add_to_segmentation": True}}
    differ = [_model("repairs"), _model("repairs_outlet", **segmentable)]
    message = _differing(differ)
    assert "repairs and repairs_outlet" in message and "cost" in message
    assert "Nothing was changed" in message
