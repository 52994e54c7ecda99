"""State files: atomic replace, tolerant load, leftover temp files, owner-only on a host."""

import os

from checks import raises
from mcagent import cjson, state


def listing(path):
    return sorted(os.listdir(path))


def test_save_load_roundtrip(workdir):
    st = state.State(workdir + "/st")
    assert st.load("reg") is None and st.load("reg", {}) == {}
    st.save("reg", {"a": 1, "b": [1, "x"], "c": None})
    st.save("obj", cjson.Obj(("z", 1), ("a", "é")))
    assert st.load("reg") == {"a": 1, "b": [1, "x"], "c": None}
    assert st.load("obj") == {"z": 1, "a": "é"}
    assert listing(workdir + "/st") == ["obj", "reg"]
    st.save("reg", {"a": 2})
    assert state.State(workdir + "/st").load("reg") == {"a": 2}


def test_nested_state_dir_is_created(workdir):
    st = state.State(workdir + "/a/b/c/")
    st.save("x", {"v": 1})
    assert st.load("x") == {"v": 1}
    assert state.State(workdir + "/a/b/c").load("x") == {"v": 1}


def test_damaged_or_short_files_read_as_absent(workdir):
    st = state.State(workdir)
    st.save("reg", {"secret": "s"})
    with open(st.file("reg"), "rb") as f:
        data = f.read()
    for bad in (b"", data[:5], data[:-1], data[:-3] + b"zz\n", data.replace(b"s", b"t", 1), b"\n\n", b"x"):
        with open(st.file("reg"), "wb") as f:
            f.write(bad)
        assert st.load("reg") is None, bad
        assert st.load("reg", "dflt") == "dflt"
    st.save("reg", {"secret": "new"})
    assert st.load("reg") == {"secret": "new"}


def test_commit_failure_keeps_the_old_value(workdir):
    st = state.State(workdir)
    st.save("reg", {"gen": 1})

    def cut(name):
        raise OSError(5, "power cut before commit")

    state.before_commit = cut
    try:
        raises(OSError, st.save, "reg", {"gen": 2})
    finally:
        state.before_commit = None
    assert st.load("reg") == {"gen": 1}
    # The next start drops the uncommitted temp file and keeps the old value.
    st2 = state.State(workdir)
    assert listing(workdir) == ["reg"]
    assert st2.load("reg") == {"gen": 1}


def test_leftover_temp_files(workdir):
    st = state.State(workdir)
    st.save("a", {"v": "old"})
    # Empty temp file (cut right after creating it), torn temp file, temp beside a good file.
    with open(workdir + "/a.tmp", "wb") as f:
        f.write(state.encode({"v": "uncommitted"}))
    with open(workdir + "/b.tmp", "wb") as f:
        pass
    with open(workdir + "/c.tmp", "wb") as f:
        f.write(state.encode({"v": "torn"})[:-4])
    st = state.State(workdir)
    assert listing(workdir) == ["a"]
    assert st.load("a") == {"v": "old"}


def test_fat_style_cut_promotes_the_complete_temp_file(workdir):
    # On FAT rename = delete + rename: a cut in between leaves only the (complete) temp file.
    with open(workdir + "/reg.tmp", "wb") as f:
        f.write(state.encode({"gen": 2}))
    st = state.State(workdir)
    assert listing(workdir) == ["reg"]
    assert st.load("reg") == {"gen": 2}
    # Same when the old file is there but damaged.
    with open(workdir + "/reg", "wb") as f:
        f.write(b"garbage")
    with open(workdir + "/reg.tmp", "wb") as f:
        f.write(state.encode({"gen": 3}))
    assert state.State(workdir).load("reg") == {"gen": 3}
    assert listing(workdir) == ["reg"]


def test_remove(workdir):
    st = state.State(workdir)
    st.save("t", {"x": 1})
    st.remove("t")
    st.remove("never-there")
    assert st.load("t") is None and listing(workdir) == []


def test_owner_only_on_a_host(workdir):
    st = state.State(workdir + "/priv")
    st.save("reg", {"secret": "s"})
    # CPython: chmod. The Unix port has no chmod: the harness (like every launcher: vboard, demo, make fit)
    # starts it with umask 077, so what it creates is owner-only too. (Boards have no permissions at all.)
    assert os.stat(workdir + "/priv")[0] & 0o777 == 0o700
    assert os.stat(st.file("reg"))[0] & 0o777 == 0o600


def test_repr_has_no_content(workdir):
    st = state.State(workdir)
    st.save("reg", {"secret": "hush"})
    assert "hush" not in repr(st)


def test_streamed_save_writes_the_same_bytes_as_encode(workdir):
    st = state.State(workdir)
    values = (
        {"token": "x" * 1500, "n": 12, "f": False, "none": None, "nested": {"b": [], "a": {}}},
        {"esc": 'a"b\\c\nd\te\x01', "list": [1, "two", [3]], "obj": cjson.Obj(("z", 1), ("a", 2))},
        [],
        {},
    )
    for v in values:
        st.save("v", v)
        with open(st.file("v"), "rb") as f:
            assert f.read() == state.encode(v), v
        assert st.load("v") is not None or v in ([], {})
