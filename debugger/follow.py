# kwatch's gdb helper: attaches and loads the module's symbols quietly, then
# follows reloads of the module. `kwatch gdb` writes FOLLOW first with the
# commands that attach, then whenever the module moved: a generation, what to
# say now, what to say when the target is running, then gdb commands. gdb
# cannot change symbols while the target runs, so a reload seen then is
# applied at the next stop. It also keeps `kill` from ending QEMU.
import os, threading, time
import gdb

_FOLLOW = os.environ.get("KWATCH_GDB_FOLLOW", "")
_pending = []


def _apply(msg, cmds):
    for c in cmds:
        try:
            gdb.execute(c, to_string=True)
        except gdb.error as e:
            gdb.write("kwatch: %s: %s\n" % (c, e))
    gdb.write(msg + "\n")
    gdb.flush()


def _running():
    try:
        t = gdb.selected_thread()
        return t is not None and t.is_running()
    except gdb.error:
        return False


def _reload(msg, later, cmds):
    if _running():
        _pending[:] = [(msg, cmds)]
        gdb.write(later + "\n")
        gdb.flush()
    else:
        _apply(msg, cmds)


def _on_stop(_):
    if _pending:
        msg, cmds = _pending.pop()
        _apply(msg, cmds)


def _read():
    try:
        with open(_FOLLOW) as f:
            return f.read().splitlines()
    except OSError:
        return []


def _poll(seen):
    while True:
        time.sleep(0.5)
        lines = _read()
        if len(lines) < 3 or lines[0] == seen:
            continue
        gdb.post_event(lambda l=lines: _reload(l[1], l[2], l[3:]))
        seen = lines[0]


if _FOLLOW:
    first = _read()
    if len(first) >= 3:
        _apply(first[1], first[3:])
    gdb.events.stop.connect(_on_stop)
    threading.Thread(target=_poll, args=(first[0] if first else None,), daemon=True).start()


class _NoKill(gdb.Command):
    """gdb's kill ends the QEMU process behind the stub: kwatch refuses it."""

    def __init__(self):
        super().__init__("kwatch-nokill", gdb.COMMAND_USER)

    def invoke(self, arg, from_tty):
        raise gdb.GdbError("kwatch: kill would end QEMU and the guest with it; detach or quit instead (the guest runs on)")


_NoKill()
# An error in a command's pre-hook keeps the command from running.
gdb.execute("define hook-kill\nkwatch-nokill\nend")
