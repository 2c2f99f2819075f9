package tpm

import (
	"crypto"
	_ "crypto/sha1" // PCR banks
	_ "crypto/sha256"
	_ "crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// DefaultEventLog is systemd's userspace measurement log.
const DefaultEventLog = "/run/log/systemd/tpm2-measure.log"

// maxEventLen bounds a measured event string.
const maxEventLen = 4096

var (
	eventAlgRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
	eventKeyRE = regexp.MustCompile(`^[A-Za-z0-9._+/=-]+$`)
)

// RootEvent formats the event cfs measures after mounting a verified root:
// "cfs-root:<alg>:<digest hex>:<commit hex>:<keyid>". alg is the object
// digest algorithm (e.g. "sha256"), keyID the id of the key that signed
// the commit.
func RootEvent(alg string, digest, commit [32]byte, keyID string) (string, error) {
	if !eventAlgRE.MatchString(alg) {
		return "", fmt.Errorf("tpm: event algorithm %q is not a lower-case token", alg)
	}
	if !eventKeyRE.MatchString(keyID) {
		return "", fmt.Errorf("tpm: event key id %q is empty or has characters other than [A-Za-z0-9._+/=-]", keyID)
	}
	return "cfs-root:" + alg + ":" + hex.EncodeToString(digest[:]) + ":" + hex.EncodeToString(commit[:]) + ":" + keyID, nil
}

// bankHashes maps the PCR banks Measure can extend to Go hashes.
var bankHashes = map[tpm2.TPMAlgID]struct {
	name string
	hash crypto.Hash
}{
	tpm2.TPMAlgSHA1:   {"sha1", crypto.SHA1},
	tpm2.TPMAlgSHA256: {"sha256", crypto.SHA256},
	tpm2.TPMAlgSHA384: {"sha384", crypto.SHA384},
	tpm2.TPMAlgSHA512: {"sha512", crypto.SHA512},
}

// EventRecord is one record of the measurement log, in the format systemd
// writes to /run/log/systemd/tpm2-measure.log: TCG CEL-JSON records without
// record numbers, each preceded by an ASCII RS (0x1e) and followed by a
// newline (a JSON text sequence, RFC 7464).
type EventRecord struct {
	PCR         int           `json:"pcr"`
	Digests     []EventDigest `json:"digests"`
	ContentType string        `json:"content_type"`
	Content     EventContent  `json:"content"`
}

// EventDigest is the digest extended into one PCR bank.
type EventDigest struct {
	HashAlg string `json:"hashAlg"`
	Digest  string `json:"digest"`
}

// EventContent is the "systemd" content type: the measured string.
type EventContent struct {
	String string `json:"string"`
}

// Measure extends PCR pcr with the hash of event in every allocated bank
// Go can hash (the SHA-256 bank must be one of them: it is the one the
// sealing policy uses; leaving other banks unextended would let them be
// forged), then appends the record to the log at logPath (created 0600,
// locked with flock(LOCK_EX) like systemd does; "" skips the log).
//
// Extending the measure PCR is the latch: a blob sealed to its
// pre-measurement value cannot be unsealed again until the next reboot.
// PCRs 11 and 12 are refused (systemd-stub/systemd-boot predict them).
func Measure(t transport.TPM, pcr int, event, logPath string) (err error) {
	if pcr < 0 || pcr > 23 {
		return fmt.Errorf("tpm: PCR %d out of range 0-23", pcr)
	}
	if pcr == 11 || pcr == 12 {
		return fmt.Errorf("tpm: refusing to extend PCR %d: systemd-measure and pcrlock predictions depend on it", pcr)
	}
	if event == "" || len(event) > maxEventLen || !utf8.ValidString(event) || strings.ContainsAny(event, "\x00\n\r\x1e") {
		return fmt.Errorf("tpm: event must be 1-%d bytes of UTF-8 without NUL, RS or newlines", maxEventLen)
	}
	banks, err := allocatedBanks(t, pcr)
	if err != nil {
		return err
	}
	rec := EventRecord{PCR: pcr, ContentType: "systemd", Content: EventContent{String: event}}
	var values tpm2.TPMLDigestValues
	for _, alg := range banks {
		bh := bankHashes[alg]
		h := bh.hash.New()
		h.Write([]byte(event))
		sum := h.Sum(nil)
		values.Digests = append(values.Digests, tpm2.TPMTHA{HashAlg: alg, Digest: sum})
		rec.Digests = append(rec.Digests, EventDigest{HashAlg: bh.name, Digest: hex.EncodeToString(sum)})
	}
	line, err := json.Marshal(rec)
	if err != nil {
		return err
	}

	var log *os.File
	if logPath != "" {
		if log, err = openEventLog(logPath); err != nil {
			return err
		}
		defer func() {
			if cerr := log.Close(); err == nil && cerr != nil {
				err = fmt.Errorf("tpm: close event log: %w", cerr)
			}
		}()
	}
	_, err = tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
		Digests:   values,
	}.Execute(t)
	if err != nil {
		return fmt.Errorf("tpm: extend PCR %d: %w", pcr, err)
	}
	if log == nil {
		return nil
	}
	buf := make([]byte, 0, len(line)+2)
	buf = append(buf, 0x1e)
	buf = append(buf, line...)
	buf = append(buf, '\n')
	if _, err := log.Write(buf); err != nil {
		return fmt.Errorf("tpm: PCR %d extended but the event log record was not written: %w", pcr, err)
	}
	return nil
}

// allocatedBanks lists the banks in which pcr is allocated, SHA-256 first.
func allocatedBanks(t transport.TPM, pcr int) ([]tpm2.TPMAlgID, error) {
	rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapPCRs, PropertyCount: 1}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("tpm: get PCR allocation: %w", err)
	}
	sels, err := rsp.CapabilityData.Data.AssignedPCR()
	if err != nil {
		return nil, fmt.Errorf("tpm: PCR allocation: %w", err)
	}
	var out []tpm2.TPMAlgID
	sha256OK := false
	for _, s := range sels.PCRSelections {
		if pcr/8 >= len(s.PCRSelect) || s.PCRSelect[pcr/8]&(1<<(pcr%8)) == 0 {
			continue
		}
		if _, ok := bankHashes[s.Hash]; !ok {
			return nil, fmt.Errorf("tpm: PCR %d is allocated in bank 0x%04x, which cfs cannot hash; refusing to leave it unextended", pcr, uint16(s.Hash))
		}
		if s.Hash == tpm2.TPMAlgSHA256 {
			sha256OK = true
			out = append([]tpm2.TPMAlgID{s.Hash}, out...)
		} else {
			out = append(out, s.Hash)
		}
	}
	if !sha256OK {
		return nil, fmt.Errorf("tpm: PCR %d is not allocated in the SHA-256 bank", pcr)
	}
	return out, nil
}

// openEventLog opens the log for appending and takes systemd's exclusive
// lock on it.
func openEventLog(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("tpm: event log directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_NOCTTY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("tpm: open event log: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("tpm: lock event log %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("tpm: stat event log: %w", err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("tpm: event log %s is not a regular file", path)
	}
	return f, nil
}

// maxEventRecord bounds one record when reading a log.
const maxEventRecord = 64 << 10

// ParseEventLog parses a measurement log in systemd's format (records
// separated by RS, 0x1e). Records of other content types are returned too;
// their Content is left empty.
func ParseEventLog(data []byte) ([]EventRecord, error) {
	var out []EventRecord
	parts := strings.Split(string(data), "\x1e")
	if len(parts) > 0 && strings.TrimSpace(parts[0]) != "" {
		return nil, fmt.Errorf("tpm: event log does not start with a record separator")
	}
	for i, p := range parts[1:] {
		if len(p) > maxEventRecord {
			return nil, fmt.Errorf("tpm: event log record %d exceeds %d bytes", i, maxEventRecord)
		}
		var raw struct {
			PCR         *int            `json:"pcr"`
			Digests     []EventDigest   `json:"digests"`
			ContentType string          `json:"content_type"`
			Content     json.RawMessage `json:"content"`
		}
		if err := json.Unmarshal([]byte(p), &raw); err != nil {
			return nil, fmt.Errorf("tpm: event log record %d: %w", i, err)
		}
		if raw.PCR == nil || *raw.PCR < 0 || *raw.PCR > 23 || len(raw.Digests) == 0 {
			return nil, fmt.Errorf("tpm: event log record %d lacks a valid pcr or digests", i)
		}
		rec := EventRecord{PCR: *raw.PCR, Digests: raw.Digests, ContentType: raw.ContentType}
		if raw.ContentType == "systemd" && len(raw.Content) > 0 {
			if err := json.Unmarshal(raw.Content, &rec.Content); err != nil {
				return nil, fmt.Errorf("tpm: event log record %d content: %w", i, err)
			}
		}
		out = append(out, rec)
	}
	return out, nil
}
