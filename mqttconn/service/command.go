package service

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// Command runs a command of a service's binary; args are the words after
// the program's name. The one command is healthcheck, for container health
// checks in images without a shell or curl: "healthcheck" asks the running
// service's /healthz (it serves), "healthcheck ready" its /readyz (it is
// connected and does its work). It reaches the port of HTTP_ADDR
// (defaultAddr when unset), on loopback when the host is unspecified.
func Command(ctx context.Context, args []string, defaultAddr string) error {
	var path string
	switch strings.Join(args, " ") {
	case "healthcheck":
		path = "/healthz"
	case "healthcheck ready":
		path = "/readyz"
	default:
		return &Error{Msg: fmt.Sprintf("unknown command %q (the only one is healthcheck, or healthcheck ready)", strings.Join(args, " "))}
	}
	addr, ok := os.LookupEnv("HTTP_ADDR")
	if !ok {
		addr = defaultAddr
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return badAddr(addr)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return healthcheck(ctx, "http://"+net.JoinHostPort(host, port)+path)
}

func healthcheck(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return fmt.Errorf("healthcheck: read %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s answered %s", url, resp.Status)
	}
	return nil
}

func badAddr(addr string) error {
	return bad("HTTP_ADDR", "%q is not host:port, like :8080 or 127.0.0.1:0", addr)
}
