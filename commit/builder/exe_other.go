//go:build !linux

package builder

// executableID cannot identify the executable here: no images are
// remembered.
func executableID() string { return "" }
