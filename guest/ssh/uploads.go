package ssh

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path"
	"regexp"
	"slices"

	"github.com/pkg/sftp"
)

// uploadRecord is what Config.UploadRecord holds while an upload
// directory exists in the guest: enough for the next run to remove it, and
// only what kwatch put there, when a run ended without RemoveUploads (a
// SIGKILL, a crash of kwatch).
type uploadRecord struct {
	Addr  string   `json:"addr"`
	User  string   `json:"user"`
	Dir   string   `json:"dir"`
	Files []string `json:"files"`
}

// saveRecord writes the upload dir and its files to the record, or removes
// the record when there is no dir; the caller holds dirMu. A record that
// cannot be written costs only the cleanup after a killed run.
func (c *Client) saveRecord() {
	p := c.cfg.UploadRecord
	if p == "" {
		return
	}
	if c.dir == "" {
		os.Remove(p)
		return
	}
	r := uploadRecord{Addr: c.cfg.Addr, User: c.cfg.User, Dir: c.dir}
	for name := range c.files {
		r.Files = append(r.Files, name)
	}
	slices.Sort(r.Files)
	b, _ := json.Marshal(r)
	tmp := p + ".tmp"
	if os.WriteFile(tmp, b, 0o600) == nil {
		os.Rename(tmp, p)
	}
}

// uploadDir is the shape of the directories privateDir makes.
var uploadDir = regexp.MustCompile(`^/tmp/kwatch\.[A-Za-z0-9]{8}$`)

// removeRecorded removes the upload dir an earlier run recorded and left
// behind in this guest, with the files it put there: only a dir of the
// shape mktemp gave it, while still private to the login, uid (see
// checkPrivate: the guest's word, not the record's), and never a file the
// record does not name, so a dir with anything else in it stays. The
// record goes once that is settled; a guest that fails to answer leaves it
// for the next run. The caller holds dirMu.
func (c *Client) removeRecorded(sc *sftp.Client, uid uint32) {
	p := c.cfg.UploadRecord
	if p == "" || c.recordRead {
		return
	}
	c.recordRead = true
	b, err := os.ReadFile(p)
	if err != nil {
		return
	}
	r, ok := c.recorded(b)
	if !ok {
		os.Remove(p) // another guest's (a managed VM's earlier boot, whose /tmp went with it), or damaged
		return
	}
	if _, err := sc.Lstat(r.Dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) { // the guest rebooted since, say
			os.Remove(p)
		}
		return
	}
	if checkPrivate(sc, r.Dir, uid) != nil {
		os.Remove(p) // no longer private: not kwatch's to touch
		return
	}
	for _, name := range r.Files {
		if err := sc.Remove(path.Join(r.Dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return
		}
	}
	sc.RemoveDirectory(r.Dir) // fails, and stays, with a file kwatch did not make in it
	os.Remove(p)
}

// recorded reads an upload record: ok when it is this guest's and names
// only what kwatch makes, a dir of mktemp's shape and plain file names in
// it. Nothing of a record that fails is removed.
func (c *Client) recorded(b []byte) (r uploadRecord, ok bool) {
	if json.Unmarshal(b, &r) != nil || r.Addr != c.cfg.Addr || r.User != c.cfg.User || !uploadDir.MatchString(r.Dir) ||
		slices.ContainsFunc(r.Files, func(name string) bool { return !fileName(name) }) {
		return uploadRecord{}, false
	}
	return r, true
}
