//go:build !linux

package bls

const noFollow = 0
