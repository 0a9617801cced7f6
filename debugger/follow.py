# kwatch's gdb helper: follows reloads of the module. `kwatch gdb` polls the
# guest and writes FOLLOW when the module moved: a generation, what to say
# now, what to say when the target is running, then gdb commands. gdb cannot
# change symbols while the target runs, so a reload seen then is applied at
# the next stop.
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


def _poll():
    seen = None
    while True:
        time.sleep(0.5)
        try:
            with open(_FOLLOW) as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        if len(lines) < 3 or lines[0] == seen:
            continue
        if seen is not None:
            gdb.post_event(lambda l=lines: _reload(l[1], l[2], l[3:]))
        seen = lines[0]


if _FOLLOW:
    gdb.events.stop.connect(_on_stop)
    threading.Thread(target=_poll, daemon=True).start()
