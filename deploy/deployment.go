package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cfs-dev/cfs/commit"
	"github.com/cfs-dev/cfs/commit/repo"
	"github.com/cfs-dev/cfs/deploy/cmdline"
	"github.com/cfs-dev/cfs/internal/atomicfile"
)

// Deployment names one deployment directory:
// cfs/deploy/<Stateroot>/deploy/<Commit>.<Serial>.
type Deployment struct {
	Stateroot string
	Commit    commit.ID
	// Serial tells apart several deployments of one commit.
	Serial int
}

// Name returns the directory name, "<commit id>.<serial>".
func (d Deployment) Name() string { return d.Commit.String() + "." + strconv.Itoa(d.Serial) }

// Path returns the deployment's path relative to the physical root, in
// the form the cfs.deployment= kernel argument carries it:
// "/cfs/deploy/<stateroot>/deploy/<commit>.<serial>".
func (d Deployment) Path() string {
	return "/" + path.Join(DeployDir, d.Stateroot, "deploy", d.Name())
}

// String is the ostree-style label "<stateroot> <commit>.<serial>".
func (d Deployment) String() string { return d.Stateroot + " " + d.Name() }

// ParseDeploymentName parses "<commit id>.<serial>".
func ParseDeploymentName(stateroot, name string) (Deployment, error) {
	id, serial, ok := strings.Cut(name, ".")
	if !ok {
		return Deployment{}, fmt.Errorf("deployment name %q: want <commit>.<serial>", name)
	}
	cid, err := commit.ParseID(id)
	if err != nil {
		return Deployment{}, fmt.Errorf("deployment name %q: %w", name, err)
	}
	n, err := strconv.Atoi(serial)
	if err != nil || n < 0 || strconv.Itoa(n) != serial {
		return Deployment{}, fmt.Errorf("deployment name %q: bad serial", name)
	}
	if _, err := cmdline.ParseStateroot(stateroot); err != nil {
		return Deployment{}, err
	}
	return Deployment{Stateroot: stateroot, Commit: cid, Serial: n}, nil
}

// ParseDeploymentPath parses a cfs.deployment= value (see Deployment.Path).
func ParseDeploymentPath(p string) (Deployment, error) {
	if _, err := cmdline.ParseDeployment(p); err != nil {
		return Deployment{}, err
	}
	parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
	if len(parts) != 5 || parts[0]+"/"+parts[1] != DeployDir || parts[3] != "deploy" {
		return Deployment{}, fmt.Errorf("deployment path %q: want /%s/<stateroot>/deploy/<commit>.<serial>", p, DeployDir)
	}
	return ParseDeploymentName(parts[2], parts[4])
}

// deployDir returns the directory of d.
func (s *Sysroot) deployDir(d Deployment) string {
	return s.path(DeployDir, d.Stateroot, "deploy", d.Name())
}

// listDeployments returns every published deployment directory of every
// stateroot (staging directories excluded), sorted by stateroot and name.
func (s *Sysroot) listDeployments() ([]Deployment, error) {
	srs, err := readDirNames(s.path(DeployDir))
	if err != nil {
		return nil, err
	}
	var out []Deployment
	for _, sr := range srs {
		if _, err := cmdline.ParseStateroot(sr); err != nil {
			continue
		}
		names, err := readDirNames(s.path(DeployDir, sr, "deploy"))
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			d, err := ParseDeploymentName(sr, n)
			if err != nil {
				continue
			}
			out = append(out, d)
		}
	}
	return out, nil
}

// nextSerial returns the serial for a new deployment of id in stateroot.
func (s *Sysroot) nextSerial(stateroot string, id commit.ID) (int, error) {
	names, err := readDirNames(s.path(DeployDir, stateroot, "deploy"))
	if err != nil {
		return 0, err
	}
	next := 0
	for _, n := range names {
		n = strings.TrimPrefix(n, stagingPref)
		if d, err := ParseDeploymentName(stateroot, n); err == nil && d.Commit == id && d.Serial >= next {
			next = d.Serial + 1
		}
	}
	return next, nil
}

// Origin says what a deployment follows; `upgrade` moves to the newest
// commit of Ref.
type Origin struct {
	Ref    string // the ref in the sysroot repository
	Remote string // the remote it is pulled from ("" for local)
}

func (o Origin) marshal() []byte {
	var b bytes.Buffer
	b.WriteString("# cfs deployment origin: what `cfs-deploy upgrade` follows\n")
	fmt.Fprintf(&b, "ref=%s\n", o.Ref)
	fmt.Fprintf(&b, "remote=%s\n", o.Remote)
	return b.Bytes()
}

func parseOrigin(b []byte) (Origin, error) {
	var o Origin
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return o, fmt.Errorf("origin line %d: want key=value", n)
		}
		switch k {
		case "ref":
			o.Ref = v
		case "remote":
			o.Remote = v
		}
	}
	if o.Ref != "" {
		if err := repo.ValidRefName(o.Ref); err != nil {
			return o, fmt.Errorf("origin: %w", err)
		}
	}
	return o, sc.Err()
}

// readOrigin reads a deployment's origin file.
func (s *Sysroot) readOrigin(d Deployment) (Origin, error) {
	b, err := os.ReadFile(filepath.Join(s.deployDir(d), OriginFile))
	if err != nil {
		return Origin{}, err
	}
	return parseOrigin(b)
}

// readDeploymentCommit reads the copy of the commit metadata and
// signature kept in the deployment, checking that the metadata hashes to
// the deployment's commit id.
func (s *Sysroot) readDeploymentCommit(d Deployment) (*commit.Metadata, []byte, []byte, error) {
	dir := s.deployDir(d)
	canonical, err := os.ReadFile(filepath.Join(dir, CommitFile))
	if err != nil {
		return nil, nil, nil, err
	}
	if commit.IDOf(canonical) != d.Commit {
		return nil, nil, nil, fmt.Errorf("deployment %s: %w", d, repo.ErrCorruptCommit)
	}
	m, err := commit.Parse(canonical)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("deployment %s: %w", d, err)
	}
	env, err := os.ReadFile(filepath.Join(dir, SignatureFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil, err
	}
	return m, canonical, env, nil
}

// isPinned reports whether d has a pin marker.
func (s *Sysroot) isPinned(d Deployment) bool {
	_, err := os.Lstat(filepath.Join(s.deployDir(d), PinnedFile))
	return err == nil
}

func (s *Sysroot) setPinned(d Deployment, pin bool) error {
	p := filepath.Join(s.deployDir(d), PinnedFile)
	if pin {
		return atomicfile.WriteFile(p, []byte("pinned: kept by cleanup and switch until unpinned\n"), 0o644)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return atomicfile.SyncDir(filepath.Dir(p))
}
