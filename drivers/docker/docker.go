package docker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/agentproj/agent/drivers/workload"
)

// DriverName is State.Driver of this driver.
const DriverName = "docker"

// DefaultPingTimeout bounds the first contact in New.
const DefaultPingTimeout = 5 * time.Second

// Driver runs workloads as containers. It is safe for concurrent use.
type Driver struct {
	cli *client.Client
	log *slog.Logger
}

type options struct {
	clientOpts  []client.Opt
	log         *slog.Logger
	pingTimeout time.Duration
}

// Option configures New.
type Option func(*options)

// WithHost sets the engine's address (unix:///path/docker.sock), overriding
// DOCKER_HOST.
func WithHost(host string) Option {
	return func(o *options) { o.clientOpts = append(o.clientOpts, client.WithHost(host)) }
}

// WithLogger sets the logger; the default discards.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithPingTimeout bounds the first contact with the engine.
func WithPingTimeout(d time.Duration) Option { return func(o *options) { o.pingTimeout = d } }

// New connects to the engine named by DOCKER_HOST (default
// unix:///var/run/docker.sock) and checks that it answers. The agent uses
// the error to fall back to the process driver.
func New(ctx context.Context, opts ...Option) (*Driver, error) {
	o := options{
		clientOpts:  []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()},
		log:         slog.New(slog.DiscardHandler),
		pingTimeout: DefaultPingTimeout,
	}
	for _, opt := range opts {
		opt(&o)
	}
	cli, err := client.NewClientWithOpts(o.clientOpts...)
	if err != nil {
		return nil, fmt.Errorf("docker: client: %w", err)
	}
	d := &Driver{cli: cli, log: o.log}
	pctx, cancel := context.WithTimeout(ctx, o.pingTimeout)
	defer cancel()
	if err := d.Ping(pctx); err != nil {
		cli.Close()
		return nil, err
	}
	return d, nil
}

// Client is the Engine API client, for tests and hooks the driver lacks.
func (d *Driver) Client() *client.Client { return d.cli }

// Close closes the client; containers keep running.
func (d *Driver) Close() error { return d.cli.Close() }

// Ping checks that the engine answers, and negotiates the API version.
func (d *Driver) Ping(ctx context.Context) error {
	if _, err := d.cli.Ping(ctx); err != nil {
		return fmt.Errorf("docker: no engine answers at %s: %w", d.cli.DaemonHost(), err)
	}
	d.cli.NegotiateAPIVersion(ctx)
	return nil
}

// Name implements workload.Driver.
func (d *Driver) Name() string { return DriverName }

// Ensure implements workload.Driver.
func (d *Driver) Ensure(ctx context.Context, spec workload.Spec) (workload.State, error) {
	if err := spec.Validate(); err != nil {
		return workload.State{}, fmt.Errorf("docker: %w", err)
	}
	if spec.Image == "" {
		return workload.State{}, fmt.Errorf("docker: workload %q: image: must be set for the docker driver", spec.Name)
	}
	hash := spec.Hash()
	info, err := d.cli.ContainerInspect(ctx, spec.Name)
	switch {
	case cerrdefs.IsNotFound(err):
		return d.create(ctx, spec, hash)
	case err != nil:
		return workload.State{}, fmt.Errorf("docker: inspect %q: %w", spec.Name, err)
	}
	if !workload.IsManaged(info.Config.Labels) {
		return stateOf(info), fmt.Errorf("docker: container %q (%s): %w", spec.Name, shortID(info.ID), workload.ErrNotManaged)
	}
	if info.Config.Labels[workload.LabelSpecHash] != hash || info.State.Dead {
		d.log.Info("replacing container: spec changed", "name", spec.Name, "id", shortID(info.ID),
			"old_hash", info.Config.Labels[workload.LabelSpecHash], "new_hash", hash)
		if err := d.stopAndRemove(ctx, info); err != nil {
			return stateOf(info), err
		}
		return d.create(ctx, spec, hash)
	}
	if info.State.Running || info.State.Restarting {
		return stateOf(info), nil
	}
	if info.State.Paused {
		if err := d.cli.ContainerUnpause(ctx, info.ID); err != nil {
			return stateOf(info), fmt.Errorf("docker: unpause %q: %w", spec.Name, err)
		}
	} else if err := d.cli.ContainerStart(ctx, info.ID, container.StartOptions{}); err != nil {
		return stateOf(info), fmt.Errorf("docker: start %q: %w", spec.Name, err)
	}
	d.log.Info("started stopped container", "name", spec.Name, "id", shortID(info.ID), "exit_code", info.State.ExitCode)
	return d.Inspect(ctx, spec.Name)
}

// create creates and starts the container of spec.
func (d *Driver) create(ctx context.Context, spec workload.Spec, hash string) (workload.State, error) {
	if err := d.ensureImage(ctx, spec.Image); err != nil {
		return workload.State{}, err
	}
	cfg, host := containerConfig(spec, hash)
	resp, err := d.cli.ContainerCreate(ctx, cfg, host, nil, nil, spec.Name)
	if err != nil {
		return workload.State{}, fmt.Errorf("docker: create %q: %w", spec.Name, err)
	}
	for _, w := range resp.Warnings {
		d.log.Warn("engine warning on create", "name", spec.Name, "warning", w)
	}
	if err := d.cli.ContainerStart(ctx, resp.ID, container.StartOptions{}); err != nil {
		return workload.State{}, fmt.Errorf("docker: start %q (%s): %w", spec.Name, shortID(resp.ID), err)
	}
	d.log.Info("started container", "name", spec.Name, "id", shortID(resp.ID), "image", spec.Image)
	return d.Inspect(ctx, spec.Name)
}

// containerConfig maps a spec to the Engine API's create request.
func containerConfig(spec workload.Spec, hash string) (*container.Config, *container.HostConfig) {
	env := make([]string, 0, len(spec.Env))
	for _, k := range slices.Sorted(maps.Keys(spec.Env)) {
		env = append(env, k+"="+spec.Env[k])
	}
	stop := int(spec.StopGrace().Round(time.Second) / time.Second)
	if stop == 0 {
		stop = 1 // Docker reads 0 as "kill at once"
	}
	cfg := &container.Config{
		Image:       spec.Image,
		Cmd:         slices.Clone(spec.Args),
		Env:         env,
		Labels:      workload.DriverLabels(spec.Labels, hash),
		Hostname:    spec.Hostname,
		StopTimeout: &stop,
	}
	mounts := make([]mount.Mount, 0, len(spec.Mounts))
	for _, m := range spec.Mounts {
		mounts = append(mounts, mount.Mount{Type: mount.TypeBind, Source: m.Source, Target: m.Target, ReadOnly: m.ReadOnly})
	}
	withInit := true
	host := &container.HostConfig{
		NetworkMode:   "host",
		Init:          &withInit,
		LogConfig:     logConfig,
		RestartPolicy: restartPolicy(spec.RestartPolicy()),
		Mounts:        mounts,
		Resources: container.Resources{
			NanoCPUs: spec.Resources.NanoCPUs,
			Memory:   spec.Resources.MemoryBytes,
		},
	}
	return cfg, host
}

// logConfig is the log driver of every container: json-file whatever the
// engine's default, so that the otelcol log shipper can read the files
// (ContainerLogGlob), with the managed, node and guid labels written into
// every line ("attrs"), which is how the shipper tells the containers the
// agent of its node manages and their guid; and rotated, so that a chatty
// container cannot fill the disk.
var logConfig = container.LogConfig{Type: "json-file", Config: map[string]string{
	"labels":   workload.LabelManaged + "," + workload.LabelNode + "," + workload.LabelGUID,
	"max-size": "10m",
	"max-file": "3",
}}

// ContainerLogGlob is the glob of the containers' json-file logs on the
// engine's host, <docker root>/containers/*/*-json.log, asked from the
// engine.
func (d *Driver) ContainerLogGlob(ctx context.Context) (string, error) {
	info, err := d.cli.Info(ctx)
	if err != nil {
		return "", fmt.Errorf("docker: engine info: %w", err)
	}
	if info.DockerRootDir == "" {
		return "", errors.New("docker: the engine does not say where its data lives (DockerRootDir)")
	}
	return path.Join(info.DockerRootDir, "containers", "*", "*-json.log"), nil
}

func restartPolicy(r workload.Restart) container.RestartPolicy {
	switch r {
	case workload.RestartOnFailure:
		return container.RestartPolicy{Name: container.RestartPolicyOnFailure}
	case workload.RestartNo:
		return container.RestartPolicy{Name: container.RestartPolicyDisabled}
	default:
		return container.RestartPolicy{Name: container.RestartPolicyAlways}
	}
}

// ensureImage uses a present image as it is and pulls an absent one.
func (d *Driver) ensureImage(ctx context.Context, ref string) error {
	_, err := d.cli.ImageInspect(ctx, ref)
	if err == nil {
		return nil
	}
	if !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("docker: inspect image %q: %w", ref, err)
	}
	d.log.Info("pulling absent image", "image", ref)
	rc, err := d.cli.ImagePull(ctx, ref, image.PullOptions{})
	if err != nil {
		return fmt.Errorf("docker: image %q is not present and pulling it failed: %w", ref, err)
	}
	defer rc.Close()
	// The pull reports its failure inside the stream.
	dec := json.NewDecoder(rc)
	for {
		var msg struct {
			Error string `json:"error"`
		}
		if err := dec.Decode(&msg); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("docker: image %q is not present and pulling it failed: %w", ref, err)
		}
		if msg.Error != "" {
			return fmt.Errorf("docker: image %q is not present and pulling it failed: %s", ref, msg.Error)
		}
	}
}

// stopAndRemove stops a container gracefully (its own stop timeout) and
// removes it.
func (d *Driver) stopAndRemove(ctx context.Context, info container.InspectResponse) error {
	name := strings.TrimPrefix(info.Name, "/")
	if info.State.Running || info.State.Restarting || info.State.Paused {
		if err := d.cli.ContainerStop(ctx, info.ID, container.StopOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("docker: stop %q: %w", name, err)
		}
	}
	if err := d.cli.ContainerRemove(ctx, info.ID, container.RemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("docker: remove %q: %w", name, err)
	}
	return nil
}

// Inspect implements workload.Driver.
func (d *Driver) Inspect(ctx context.Context, name string) (workload.State, error) {
	info, err := d.cli.ContainerInspect(ctx, name)
	if cerrdefs.IsNotFound(err) {
		return workload.State{Name: name, Driver: DriverName, Status: workload.StatusMissing}, nil
	}
	if err != nil {
		return workload.State{}, fmt.Errorf("docker: inspect %q: %w", name, err)
	}
	return stateOf(info), nil
}

func stateOf(info container.InspectResponse) workload.State {
	st := workload.State{
		Name:   strings.TrimPrefix(info.Name, "/"),
		Driver: DriverName,
		ID:     info.ID,
		// The engine's restarts by the container's policy since it was
		// last started through the API; the Supervisor counts them.
		Restarts: info.RestartCount,
	}
	if info.Config != nil {
		st.Image = info.Config.Image
		st.Labels = maps.Clone(info.Config.Labels)
		st.SpecHash = info.Config.Labels[workload.LabelSpecHash]
	}
	if s := info.State; s != nil {
		st.ExitCode = s.ExitCode
		st.LastError = s.Error
		switch {
		case s.Restarting:
			st.Status = workload.StatusRestarting
			st.Since = parseTime(s.FinishedAt)
		case s.Running && !s.Paused:
			st.Status = workload.StatusRunning
			st.Since = parseTime(s.StartedAt)
		case s.Status == container.StateCreated:
			st.Status = workload.StatusCreated
			st.Since = parseTime(info.Created)
		default: // exited, dead, paused, removing: not running
			st.Status = workload.StatusExited
			st.Since = parseTime(s.FinishedAt)
		}
	}
	return st
}

// parseTime reads the engine's RFC 3339 times; its zero time
// ("0001-01-01T00:00:00Z") stays zero.
func parseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || t.Year() <= 1 {
		return time.Time{}
	}
	return t
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// Remove implements workload.Driver.
func (d *Driver) Remove(ctx context.Context, name string) error {
	info, err := d.cli.ContainerInspect(ctx, name)
	if cerrdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("docker: inspect %q: %w", name, err)
	}
	if !workload.IsManaged(info.Config.Labels) {
		return fmt.Errorf("docker: remove %q (%s): %w", name, shortID(info.ID), workload.ErrNotManaged)
	}
	if err := d.stopAndRemove(ctx, info); err != nil {
		return err
	}
	d.log.Info("removed container", "name", name, "id", shortID(info.ID))
	return nil
}

// List implements workload.Driver.
func (d *Driver) List(ctx context.Context, selector map[string]string) ([]workload.State, error) {
	args := filters.NewArgs(filters.Arg("label", workload.LabelManaged+"="+workload.ManagedValue))
	for k, v := range selector {
		args.Add("label", k+"="+v)
	}
	list, err := d.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: args})
	if err != nil {
		return nil, fmt.Errorf("docker: list containers: %w", err)
	}
	out := make([]workload.State, 0, len(list))
	for _, c := range list {
		// The summary lacks times and exit codes: inspect each (a handful).
		info, err := d.cli.ContainerInspect(ctx, c.ID)
		if cerrdefs.IsNotFound(err) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("docker: inspect %s: %w", shortID(c.ID), err)
		}
		if workload.Matches(info.Config.Labels, selector) { // the filter did it; this guards a stale engine
			out = append(out, stateOf(info))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Signal implements workload.Signaler: the engine sends sig to the
// container's main process (tini, which forwards it).
func (d *Driver) Signal(ctx context.Context, name string, sig syscall.Signal) error {
	info, err := d.cli.ContainerInspect(ctx, name)
	if err != nil {
		return fmt.Errorf("docker: signal %s to %q: %w", sig, name, err)
	}
	if !workload.IsManaged(info.Config.Labels) {
		return fmt.Errorf("docker: signal %s to %q: %w", sig, name, workload.ErrNotManaged)
	}
	if err := d.cli.ContainerKill(ctx, info.ID, strconv.Itoa(int(sig))); err != nil {
		return fmt.Errorf("docker: signal %s to %q: %w", sig, name, err)
	}
	return nil
}

// Tail implements workload.OutputTailer: the last lines of the container's
// log (stdout and stderr, across its restarts), read through the engine.
func (d *Driver) Tail(ctx context.Context, name string, lines int) ([]string, error) {
	info, err := d.cli.ContainerInspect(ctx, name)
	if cerrdefs.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("docker: logs of %q: %w", name, err)
	}
	if !workload.IsManaged(info.Config.Labels) {
		return nil, fmt.Errorf("docker: logs of %q: %w", name, workload.ErrNotManaged)
	}
	// Blank lines are dropped afterwards: ask for a few more.
	rc, err := d.cli.ContainerLogs(ctx, info.ID, container.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: strconv.Itoa(2 * lines)})
	if err != nil {
		return nil, fmt.Errorf("docker: logs of %q: %w", name, err)
	}
	defer rc.Close()
	var out bytes.Buffer
	if info.Config.Tty {
		_, err = io.Copy(&out, rc)
	} else {
		_, err = stdcopy.StdCopy(&out, &out, rc) // one stream, in the order written
	}
	if err != nil {
		return nil, fmt.Errorf("docker: logs of %q: %w", name, err)
	}
	return workload.LastLines(out.String(), lines), nil
}

var (
	_ workload.Driver       = (*Driver)(nil)
	_ workload.Signaler     = (*Driver)(nil)
	_ workload.OutputTailer = (*Driver)(nil)
)
