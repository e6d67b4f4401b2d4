"""The daemon's watched table folder: loading, reloading on replacement, refusing broken files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from widthwise.search import table_store
from tests.support.synthetic import mobilenet_v2_like_table, synthetic_table
from widthwise.search.table_store import SearcherCache, TableStore

CHOICES = [[8, 16], [16, 32, 48], [32, 64]]


def write_table(path: Path, seed: int = 0, **kwargs: object) -> dict:
    obj = synthetic_table(CHOICES, seed=seed, **kwargs).to_json()
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)
    return obj


def test_loads_every_table_and_skips_temporaries_and_other_files(tmp_path: Path) -> None:
    write_table(tmp_path / "a.json")
    write_table(tmp_path / "b.json", seed=1)
    (tmp_path / ".a.json.partial").write_text("{")
    (tmp_path / "readme.txt").write_text("hello")
    (tmp_path / "folder.json").mkdir()
    store = TableStore(tmp_path)
    assert store.names() == ["a", "b"]
    assert all(e.status == "ok" and e.table is not None for e in store.entries())
    assert store.get("missing") is None


def test_a_replacement_is_seen_only_after_the_check_interval(tmp_path: Path) -> None:
    write_table(tmp_path / "a.json", constant_ms=0.3)
    store = TableStore(tmp_path, check_interval=3600)
    first = store.get("a").table
    write_table(tmp_path / "a.json", constant_ms=0.7)
    assert store.get("a").table is first, "no rescan before the interval"
    store.refresh(force=True)
    assert store.get("a").table.constant_ms == pytest.approx(0.7)


def test_reload_replaces_the_searcher_cache(tmp_path: Path) -> None:
    write_table(tmp_path / "a.json")
    store = TableStore(tmp_path, check_interval=0)
    entry = store.get("a")
    entry.searchers.get_or_build("flops", True, lambda: "old searcher")
    write_table(tmp_path / "a.json", seed=4)
    assert store.get("a").searchers.peek("flops") is None


def test_a_broken_replacement_keeps_the_good_table(tmp_path: Path) -> None:
    good = write_table(tmp_path / "a.json")
    store = TableStore(tmp_path, check_interval=0)
    before = store.get("a").table
    text = json.dumps(good)
    (tmp_path / "a.json.new").write_text(text[: len(text) // 3])
    os.replace(tmp_path / "a.json.new", tmp_path / "a.json")
    entry = store.get("a")
    assert entry.status == "stale" and entry.table is before
    assert entry.error.startswith("a.json: file: not valid JSON")
    assert str(tmp_path) not in entry.error, "the folder's path is not published"
    described = entry.describe()
    assert described["status"] == "stale" and described["space"]["layers"] == len(CHOICES)
    write_table(tmp_path / "a.json", seed=2)
    entry = store.get("a")
    assert entry.status == "ok" and entry.error is None and entry.table is not before


def test_a_file_broken_from_the_start_is_an_error_entry(tmp_path: Path) -> None:
    bad = synthetic_table(CHOICES).to_json()
    bad["blocks"][2]["ms"][0][1] = -1.0
    (tmp_path / "neg.json").write_text(json.dumps(bad))
    write_table(tmp_path / "ok.json")
    store = TableStore(tmp_path)
    entry = store.get("neg")
    assert entry.status == "error" and entry.table is None
    assert "blocks[2].ms[0][1]" in entry.error
    assert "space" not in entry.describe()
    assert store.get("ok").status == "ok"


def test_an_oversize_file_is_refused_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_table(tmp_path / "a.json")
    monkeypatch.setattr(table_store, "MAX_TABLE_BYTES", 100)
    entry = TableStore(tmp_path).get("a")
    assert entry.status == "error" and "more than the 100 allowed" in entry.error


def test_removed_files_leave_the_store(tmp_path: Path) -> None:
    write_table(tmp_path / "a.json")
    write_table(tmp_path / "b.json")
    store = TableStore(tmp_path, check_interval=0)
    (tmp_path / "a.json").unlink()
    assert store.names() == ["a", "b"] and store.get("a") is None and store.names() == ["b"]


def test_a_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        TableStore(tmp_path / "nope")


def test_searcher_cache_pins_named_and_bounds_inline_objectives() -> None:
    cache = SearcherCache(max_inline=2)
    built: list[str] = []

    def builder(name: str):
        return lambda: built.append(name) or name
    assert cache.get_or_build("flops", True, builder("flops")) == "flops"
    for key in ("x", "y", "z"):
        cache.get_or_build(key, False, builder(key))
    assert cache.peek("flops") == "flops" and cache.peek("x") is None
    assert cache.peek("y") == "y" and cache.peek("z") == "z" and len(cache) == 3
    assert cache.get_or_build("y", False, builder("y2")) == "y"   # a hit builds nothing
    cache.get_or_build("w", False, builder("w"))                   # evicts z, the least recent
    assert cache.peek("z") is None and cache.peek("y") == "y"
    assert built == ["flops", "x", "y", "z", "w"]


def test_a_table_with_non_finite_numbers_is_an_error_entry_and_the_others_load(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_table(tmp_path / "good.json")
    text = json.dumps(synthetic_table(CHOICES, seed=2).to_json())
    (tmp_path / "inf.json").write_text(text.replace('"choices": [8, 16]', '"choices": [8, Infinity]', 1))
    nan_meta = json.loads(text)
    nan_meta["fit"]["mape"] = "__nan__"
    (tmp_path / "nan.json").write_text(json.dumps(nan_meta).replace('"__nan__"', "NaN"))
    with caplog.at_level("WARNING", logger="widthwise.daemon"):
        store = TableStore(tmp_path)
    entries = {e.name: e for e in store.entries()}
    assert entries["good"].status == "ok"
    assert entries["inf"].status == "error" and "inf.json: space.layers[0].choices[1]" in entries["inf"].error
    assert entries["nan"].status == "error" and "nan.json: fit.mape" in entries["nan"].error
    assert all(json.dumps(e.describe(), allow_nan=False) for e in entries.values())
    assert "inf.json" in caplog.text and "nan.json" in caplog.text


def test_in_background_mode_a_changed_file_is_loaded_by_the_loader_thread(tmp_path: Path) -> None:
    write_table(tmp_path / "a.json", constant_ms=0.3)
    store = TableStore(tmp_path, check_interval=0, background=True)
    first = store.get("a").table
    write_table(tmp_path / "a.json", constant_ms=0.7)
    store.refresh()
    loader = store._loader
    assert loader is not None
    loader.join(30)
    store.refresh()
    assert store.get("a").table is not first and store.get("a").table.constant_ms == pytest.approx(0.7)


def test_an_entry_not_loaded_yet_is_loading_not_ok(tmp_path: Path) -> None:
    entry = table_store.TableEntry("fresh", tmp_path / "fresh.json")
    assert entry.status == "loading" and entry.describe()["status"] == "loading"
    entry.error = "fresh.json: not JSON"
    assert entry.status == "error"


def test_v2_tables_are_listed_and_served_beside_v1_tables(tmp_path: Path) -> None:
    write_table(tmp_path / "chain.json")
    tree = mobilenet_v2_like_table(levels=5, seed=3)
    tree.save(tmp_path / "tree.json")
    store = TableStore(tmp_path)
    assert store.names() == ["chain", "tree"]
    chain_entry, tree_entry = store.get("chain").describe(), store.get("tree").describe()
    assert chain_entry["format"] == "widthwise-table/1" and chain_entry["space"]["variables"] == len(CHOICES)
    assert tree_entry["status"] == "ok" and tree_entry["format"] == "widthwise-table/2"
    assert tree_entry["space"]["variables"] == tree.num_layers == 25
    assert tree_entry["space"]["names"][:2] == ["stem", "stage1"] and tree_entry["space"]["factors"] == 36
    assert tree_entry["space"]["resolution"] == 224 and tree_entry["objectives"] == ["flops", "params"]
    served = store.get("tree").table
    widths = [c[0] for c in served.choices]
    assert served.predict(widths) == pytest.approx(tree.predict(widths))
    assert json.dumps(tree_entry, allow_nan=False)


def test_a_corrupt_v2_table_is_an_error_entry_naming_the_field(tmp_path: Path) -> None:
    obj = mobilenet_v2_like_table(levels=5, seed=3).to_json()
    obj["factors"][4]["variables"] = ["stage2", "stage9"]
    (tmp_path / "bad.json").write_text(json.dumps(obj))
    cyclic = mobilenet_v2_like_table(levels=5, seed=3).to_json()
    cyclic["factors"].append({"name": "loop", "variables": ["stem", "head"], "ms": [[0.0] * 5] * 5})
    (tmp_path / "loop.json").write_text(json.dumps(cyclic))
    write_table(tmp_path / "ok.json")
    store = TableStore(tmp_path)
    bad, loop = store.get("bad"), store.get("loop")
    assert bad.status == "error" and bad.error.startswith("bad.json: factors[4].variables[1]: unknown variable 'stage9'")
    assert loop.status == "error" and "stem and head close a cycle" in loop.error
    assert "space" not in bad.describe() and store.get("ok").status == "ok"
