package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5"
)

// createDatabase creates a database of its own on the PostgreSQL server at
// server (a URL of any database on it) and returns its URL and a function
// that drops it.
func createDatabase(ctx context.Context, server, prefix string) (string, func() error, error) {
	u, err := url.Parse(server)
	if err != nil {
		return "", nil, fmt.Errorf("postgres url: %w", err)
	}
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return "", nil, fmt.Errorf("random name: %w", err)
	}
	name := prefix + "_" + hex.EncodeToString(b)
	admin, err := pgx.Connect(ctx, server)
	if err != nil {
		return "", nil, fmt.Errorf("postgresql at %s: %w", u.Redacted(), err)
	}
	defer admin.Close(context.WithoutCancel(ctx))
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", nil, fmt.Errorf("create database %s: %w", name, err)
	}
	drop := func() error {
		ctx := context.Background()
		admin, err := pgx.Connect(ctx, server)
		if err != nil {
			return fmt.Errorf("drop database %s: %w", name, err)
		}
		defer admin.Close(ctx)
		if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("drop database %s: %w", name, err)
		}
		return nil
	}
	u.Path = "/" + name
	return u.String(), drop, nil
}

// backendCPU is the CPU time used so far by the server processes serving
// the database at url, other than the connection that asks: the share of
// a store's work that a client's own CPU time does not show. It needs the
// server on this machine (its processes in /proc).
func backendCPU(ctx context.Context, url string) (time.Duration, error) {
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		return 0, err
	}
	defer c.Close(context.WithoutCancel(ctx))
	rows, err := c.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`)
	if err != nil {
		return 0, fmt.Errorf("server processes: %w", err)
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return 0, fmt.Errorf("server processes: %w", err)
	}
	var sum time.Duration
	for _, pid := range pids {
		d, err := procCPU(int(pid))
		if err != nil {
			return 0, fmt.Errorf("server process %d: %w", pid, err)
		}
		sum += d
	}
	return sum, nil
}
