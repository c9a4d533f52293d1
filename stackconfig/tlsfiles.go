package stackconfig

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"
	"time"
)

// CAPool reads a PEM file of CA certificates into a pool; a file without
// one is an error.
func CAPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate in it", file)
	}
	return pool, nil
}

// KeyPairFiles is a certificate and its key kept in two files that may be
// renewed in place: Get gives the pair as the files hold it now, read again
// when either file's size or modification time changed, so a renewed
// certificate is used from the next TLS handshake on without a restart. A
// pair that does not load (half written, a key that does not match) leaves
// the last good one in use.
type KeyPairFiles struct {
	certFile, keyFile string

	mu    sync.Mutex
	stamp [2]fileStamp
	pair  *tls.Certificate
}

type fileStamp struct {
	size int64
	mod  time.Time
}

// LoadKeyPair reads the pair once; an error names what is wrong with it.
func LoadKeyPair(certFile, keyFile string) (*KeyPairFiles, error) {
	k := &KeyPairFiles{certFile: certFile, keyFile: keyFile}
	stamp := k.stamps()
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	k.pair, k.stamp = &pair, stamp
	return k, nil
}

// Get returns the current pair; it never fails once LoadKeyPair did.
func (k *KeyPairFiles) Get() *tls.Certificate {
	k.mu.Lock()
	defer k.mu.Unlock()
	if stamp := k.stamps(); stamp != k.stamp {
		if pair, err := tls.LoadX509KeyPair(k.certFile, k.keyFile); err == nil {
			k.pair, k.stamp = &pair, stamp
		}
	}
	return k.pair
}

// Files are the certificate and key files k reads.
func (k *KeyPairFiles) Files() (certFile, keyFile string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.certFile, k.keyFile
}

// SetFiles points k at another pair of files (a reload that changed
// their paths), used from the next handshake on. A pair that does not
// load is an error, and leaves k as it was.
func (k *KeyPairFiles) SetFiles(certFile, keyFile string) error {
	next, err := LoadKeyPair(certFile, keyFile)
	if err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.certFile, k.keyFile, k.pair, k.stamp = certFile, keyFile, next.pair, next.stamp
	return nil
}

// GetCertificate is Get in the shape of tls.Config.GetCertificate.
func (k *KeyPairFiles) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return k.Get(), nil
}

// GetClientCertificate is Get in the shape of
// tls.Config.GetClientCertificate.
func (k *KeyPairFiles) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return k.Get(), nil
}

// stamps are the files' sizes and modification times; k.mu, or k not
// shared yet.
func (k *KeyPairFiles) stamps() [2]fileStamp {
	var s [2]fileStamp
	for i, f := range []string{k.certFile, k.keyFile} {
		if fi, err := os.Stat(f); err == nil {
			s[i] = fileStamp{fi.Size(), fi.ModTime()}
		}
	}
	return s
}
