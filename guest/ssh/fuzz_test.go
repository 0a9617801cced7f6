package ssh

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"

	xssh "golang.org/x/crypto/ssh"

	"kwatch/kmsg"
)

// fuzzToken stands for the kept shell's random token.
const fuzzToken = "00112233445566778899aabbccddeeff"

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// runFramed runs script in a kept shell whose output is stream.
func runFramed(stream []byte, script string) (in string, out []byte, exit int, sent bool, err error) {
	var b bytes.Buffer
	sh := &keptShell{in: nopCloser{&b}, out: bufio.NewReader(bytes.NewReader(stream)), token: fuzzToken}
	out, exit, sent, err = sh.run(script)
	return b.String(), out, exit, sent, err
}

// FuzzShellFraming frames a script's output as the kept shell does (a token
// line, the output, a newline and the token with the exit status) and reads
// it back: the output comes back byte for byte, whatever follows.
func FuzzShellFraming(f *testing.F) {
	f.Fuzz(func(t *testing.T, output []byte, exit uint8, after []byte) {
		end := []byte(fuzzToken + " ")
		if bytes.HasPrefix(output, end) || bytes.Contains(output, append([]byte("\n"), end...)) {
			return // a line only the shell's printf writes: the token is secret
		}
		stream := slices.Concat([]byte(fuzzToken+"\n"), output, []byte("\n"+fuzzToken+" "+strconv.Itoa(int(exit))+"\n"), after)
		in, out, gotExit, sent, err := runFramed(stream, "true")
		if err != nil || !sent || gotExit != int(exit) || !bytes.Equal(out, output) {
			t.Fatalf("read back %q, exit %d, sent %v, %v; want %q, exit %d", out, gotExit, sent, err, output, exit)
		}
		if !strings.HasPrefix(in, "printf '\\n%s\\n' "+fuzzToken+"\n") || !strings.Contains(in, "{\ntrue\n}") {
			t.Fatalf("sent %q: want the start token and the script", in)
		}
	})
}

// FuzzShellStream reads whatever a kept shell (or a guest pretending to be
// one) sends: a script's output is what comes between the first start line
// and the first end line after it, and nothing else ends a script.
func FuzzShellStream(f *testing.F) {
	f.Fuzz(func(t *testing.T, stream []byte) {
		_, out, exit, sent, err := runFramed(stream, "true")
		start, end := []byte(fuzzToken+"\n"), []byte(fuzzToken+" ")
		var between []byte
		startAt, endAt := -1, -1
		for i, l := range bytes.SplitAfter(stream, []byte("\n")) {
			switch {
			case !bytes.HasSuffix(l, []byte("\n")): // cut off by the end of the stream
			case startAt < 0 && bytes.Equal(l, start):
				startAt = i
			case startAt >= 0 && bytes.HasPrefix(l, end):
				endAt = i
			case startAt >= 0:
				between = append(between, l...)
			}
			if endAt >= 0 {
				status, serr := strconv.Atoi(string(bytes.TrimSpace(l[len(end):])))
				if !sent || exit != status || (err == nil) != (serr == nil) || !bytes.Equal(out, bytes.TrimSuffix(between, []byte("\n"))) {
					t.Fatalf("read %q, exit %d, sent %v, %v; want %q, exit %d", out, exit, sent, err, between, status)
				}
				return
			}
		}
		if err == nil || exit != -1 || !sent || len(out) > len(stream) {
			t.Fatalf("a stream without an end line after a start line: read %q, exit %d, sent %v, %v", out, exit, sent, err)
		}
	})
}

// FuzzDeliver streams any /dev/kmsg text a guest could send from any seq:
// every seq from next on is delivered once, as a record or counted lost.
func FuzzDeliver(f *testing.F) {
	f.Fuzz(func(t *testing.T, stream string, next uint64) {
		var got []kmsg.Record
		n, _ := deliver(strings.NewReader(stream), next, func(r kmsg.Record) { got = append(got, r) })
		covered, want := uint64(0), next
		for _, r := range got {
			if r.Seq < want {
				t.Fatalf("seq %d after seq %d (from %d)", r.Seq, want-1, next)
			}
			if m := regexp.MustCompile(`^kwatch: (\d+) kernel log lines lost`).FindStringSubmatch(r.Message); m != nil {
				lost, _ := strconv.ParseUint(m[1], 10, 64)
				if lost == 0 || r.Seq+1-lost != want {
					t.Fatalf("%q at seq %d, expected seq %d", r.Message, r.Seq, want)
				}
				covered += lost
			} else {
				if r.Seq != want {
					t.Fatalf("record seq %d, want %d", r.Seq, want)
				}
				covered++
			}
			want = r.Seq + 1
		}
		if n != want || covered != n-next {
			t.Fatalf("next %d after %d seqs from %d, want %d", n, covered, next, want)
		}
	})
}

// testHostKey is the key the hosts of FuzzKnownHosts and TestPinHostKey present.
var testHostKey, _ = xssh.NewPublicKey(ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)).Public())

// FuzzKnownHosts checks a host key against any known_hosts file: a broken
// one is a one-line error, and a key pinned in it is known to the next run.
func FuzzKnownHosts(f *testing.F) {
	dir := f.TempDir() // one per worker, whose runs take turns
	f.Fuzz(func(t *testing.T, content string) {
		const addr = "127.0.0.1:2222"
		cfg := Config{Addr: addr, KnownHosts: filepath.Join(dir, "known_hosts"), TrustNew: true}
		if err := os.WriteFile(cfg.KnownHosts, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		c := &Client{cfg: cfg}
		algos := c.hostKeyAlgorithms()
		all := []string{xssh.KeyAlgoED25519, xssh.KeyAlgoECDSA256, xssh.KeyAlgoECDSA384, xssh.KeyAlgoECDSA521, xssh.KeyAlgoRSASHA512, xssh.KeyAlgoRSASHA256}
		if !reflect.DeepEqual(slices.Sorted(slices.Values(algos)), slices.Sorted(slices.Values(all))) {
			t.Fatalf("host key algorithms %v, want an order of %v", algos, all)
		}
		remote := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2222}
		err := c.checkHostKey(addr, remote, testHostKey)
		var broken *knownHostsError
		var changed *hostKeyChangedError
		switch {
		case errors.As(err, &broken), errors.As(err, &changed):
			if strings.ContainsFunc(err.Error(), unicode.IsControl) {
				t.Fatalf("error %q: want one line of text", err)
			}
			return
		case err != nil:
			return // a revoked key, say
		}
		c = &Client{cfg: cfg}
		c.cfg.TrustNew = false
		if err := c.checkHostKey(addr, remote, testHostKey); err != nil {
			b, _ := os.ReadFile(cfg.KnownHosts)
			t.Fatalf("the key accepted once is not known the next time: %v; known_hosts:\n%s", err, b)
		}
	})
}

// FuzzUploadRecord reads any uploads.json: one it accepts names only what
// kwatch makes, and reads back the same when written again.
func FuzzUploadRecord(f *testing.F) {
	dir := f.TempDir() // one per worker, whose runs take turns
	f.Fuzz(func(t *testing.T, b []byte) {
		c := &Client{cfg: Config{Addr: "127.0.0.1:2222", User: "root", UploadRecord: filepath.Join(dir, "uploads.json")}}
		r, ok := c.recorded(b)
		if !ok {
			return
		}
		if !uploadDir.MatchString(r.Dir) || r.Addr != c.cfg.Addr || r.User != c.cfg.User {
			t.Fatalf("accepted %+v", r)
		}
		c.dir, c.files = r.Dir, map[string]bool{}
		for _, name := range r.Files {
			if !fileName(name) {
				t.Fatalf("accepted the file name %q", name)
			}
			c.files[name] = true
		}
		c.saveRecord()
		again, err := os.ReadFile(c.cfg.UploadRecord)
		if err != nil {
			t.Fatal(err)
		}
		r2, ok := c.recorded(again)
		r.Files = slices.Compact(slices.Sorted(slices.Values(r.Files)))
		if !ok || !reflect.DeepEqual(r2, r) {
			t.Fatalf("wrote %+v, read back %+v, %v", r, r2, ok)
		}
	})
}
