/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The zygote: starts CPython, imports the pool's preload modules and then forks workers on
 * request from the daemon's control socket (fd 3, SOCK_SEQPACKET, ZygoteMsg records).
 *
 * Each worker comes from a double fork, so that its parent is the daemon (a child subreaper)
 * rather than the zygote: zygote -> intermediate -> worker. FORK requests queued together on the
 * control socket (a pool filling up) share one intermediate. It forks every worker of the batch,
 * writes their pids to a pipe and _exit()s. The zygote sends FORKED for each pid and reaps the
 * intermediate. A batch of n workers costs n + 1 forks of the zygote's address space, not 2n.
 *
 * What a forked process may touch:
 *   - The intermediate runs only async-signal-safe calls (fork, write, _exit). It never enters
 *     Python, allocates or logs, because another thread may have held a lock at fork time.
 *   - The worker calls PyOS_AfterFork_Child() before any other Python API, which rebuilds the
 *     interpreter's thread and lock state; after that it owns the interpreter. It closes the
 *     zygote's fds (the control socket and the daemon pidfd) and never writes to them. Threads
 *     that preloaded code started in the zygote do not exist in the worker. That is why the
 *     zygote caps native thread pools (BLAS, OpenMP) at --blas-threads before Py_Initialize.
 *   - Files that preloaded modules opened stay shared with the zygote, as after any fork.
 */
#include "worker_zygote.h"

#include <Python.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "etf_py.h"
#include "log.h"
#include "worker_call.h"
#include "worker_heartbeat.h"
#include "worker_proto.h"
#include "worker_serve.h"
#include "worker_session.h"

#define WORKER_ZYGOTE_EXIT_CHILD_SETUP 71 /* EX_OSERR: a forked worker could not set itself up */
/* The intermediate exits after the forks of its batch; waiting longer means something is wrong. */
#define WORKER_ZYGOTE_REPARENT_TIMEOUT_MS 5000
#define WORKER_ZYGOTE_VERSION_PROBE_TIMEOUT_MS 10000
/*
 * FORK requests served by one intermediate; more wait for the next batch. A worker starts only
 * when its intermediate exits, so the batch is small. A batch of 64 from a 4 GB zygote took
 * about 5 s, longer than the first workers' heartbeat misses allow. A batch of 8 takes an
 * estimated eighth of that.
 */
#define WORKER_ZYGOTE_FORK_BATCH_MAX 8

extern char **environ;

typedef struct {
    const WorkerZygoteOptions *opts;
    int control_fd;
    int daemon_pidfd; /* -1 when the kernel has no pidfd_open */
    bool warned_threads;
} Zygote;

/* One FORK request: the worker's id and its ends of the request and heartbeat sockets. */
typedef struct {
    uint32_t worker_id;
    int request_fd;
    int heartbeat_fd;
} ForkJob;

static int pidfd_open_pid(pid_t pid)
{
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);

    return fd < 0 ? -errno : fd;
}

static void send_message(const Zygote *z, ZygoteMsgType type, uint32_t worker_id, pid_t pid,
                         int error, const char *text)
{
    ZygoteMsg msg = {.type = type, .worker_id = worker_id, .pid = pid, .error = error};

    if (text) {
        snprintf(msg.text, sizeof(msg.text), "%s", text);
    }
    for (;;) {
        if (send(z->control_fd, &msg, sizeof(msg), MSG_NOSIGNAL) == (ssize_t)sizeof(msg)) {
            return;
        }
        if (errno != EINTR) {
            log_warning_errno(-errno, "Failed to send zygote message %d to the daemon", (int)type);
            return;
        }
    }
}

/* Describe the raised Python exception as "Type: message" in buf, and clear it. */
static void format_exception(char *buf, size_t size)
{
    PyObject *exc = worker_call_take_exception();
    PyObject *text = exc ? PyObject_Str(exc) : NULL;
    const char *name = exc ? Py_TYPE(exc)->tp_name : "unknown error";
    const char *message = text ? PyUnicode_AsUTF8(text) : NULL;

    if (message && message[0]) {
        snprintf(buf, size, "%s: %s", name, message);
    } else {
        snprintf(buf, size, "%s", name);
    }
    PyErr_Clear();
    Py_XDECREF(text);
    Py_XDECREF(exc);
}

/* Cap native thread pools unless the environment already chose; must run before Python. */
static void set_blas_threads(unsigned threads)
{
    static const char *const variables[] = {
        "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
    };
    char value[16];

    snprintf(value, sizeof(value), "%u", threads);
    for (size_t i = 0; i < sizeof(variables) / sizeof(variables[0]); i++) {
        setenv(variables[i], value, 0);
    }
}

/* Parse "3.11..." into major and minor; returns 0 or -EINVAL. */
static int parse_version(const char *text, int *major, int *minor)
{
    int a, b;

    if (sscanf(text, "%d.%d", &a, &b) != 2) {
        return -EINVAL;
    }
    *major = a;
    *minor = b;
    return 0;
}

/* Read the version of a virtualenv from its pyvenv.cfg; returns 0, -ENOENT or -EINVAL. */
static int venv_version(const char *cfg_path, int *major, int *minor)
{
    char line[512];
    int r = -EINVAL;
    FILE *f = fopen(cfg_path, "re");

    if (!f) {
        return -ENOENT;
    }
    while (fgets(line, sizeof(line), f)) {
        char key[64], value[128];
        if (sscanf(line, " %63[^= ] = %127s", key, value) == 2
            && (strcmp(key, "version") == 0 || strcmp(key, "version_info") == 0)) {
            r = parse_version(value, major, minor);
            break;
        }
    }
    fclose(f);
    return r;
}

/* Run `exe` to ask its version; returns 0 or a negative errno. */
static int probe_version(const char *exe, int *major, int *minor)
{
    static char isolated[] = "-I", no_site[] = "-S", command[] = "-c";
    static char probe[] = "import sys; print('%d.%d' % sys.version_info[:2])";
    char program[PATH_MAX];
    char *argv[] = {program, isolated, no_site, command, probe, NULL};
    posix_spawn_file_actions_t actions;
    char out[32] = {0};
    size_t have = 0;
    int fds[2], status, r;
    pid_t pid;

    if (snprintf(program, sizeof(program), "%s", exe) >= (int)sizeof(program)) {
        return -ENAMETOOLONG;
    }
    if (pipe2(fds, O_CLOEXEC) < 0) {
        return -errno;
    }
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    r = -posix_spawn(&pid, exe, &actions, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    close(fds[1]);
    if (r < 0) {
        close(fds[0]);
        return r;
    }
    /* The probe prints a few bytes and exits; a hung or chatty program is killed. */
    struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
    bool kill_probe = false;
    for (;;) {
        int ready = poll(&pfd, 1, WORKER_ZYGOTE_VERSION_PROBE_TIMEOUT_MS);
        if (ready < 0 && errno == EINTR) {
            continue;
        }
        if (ready <= 0 || have == sizeof(out) - 1) {
            kill_probe = true;
            break;
        }
        ssize_t n = read(fds[0], out + have, sizeof(out) - 1 - have);
        if (n <= 0) {
            break;
        }
        have += (size_t)n;
    }
    close(fds[0]);
    if (kill_probe) {
        kill(pid, SIGKILL); /* our own probe child */
    }
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (kill_probe) {
        return -ETIMEDOUT;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        return -ENOEXEC;
    }
    return parse_version(out, major, minor);
}

/* Make `path` absolute without resolving symlinks: a venv's python is a symlink. */
static int absolute_path(const char *path, char *out, size_t size)
{
    char cwd[PATH_MAX];

    if (path[0] == '/') {
        return snprintf(out, size, "%s", path) < (int)size ? 0 : -ENAMETOOLONG;
    }
    if (!getcwd(cwd, sizeof(cwd))) {
        return -errno;
    }
    return snprintf(out, size, "%s/%s", cwd, path) < (int)size ? 0 : -ENAMETOOLONG;
}

/* Find the interpreter executable of --python: an executable, a venv or a prefix directory. */
static int find_executable(const char *python, char *exe, size_t size, char *error,
                           size_t error_size)
{
    static const char *const names[] = {"bin/python3", "bin/python"};
    char base[PATH_MAX];
    struct stat st;
    int r = absolute_path(python, base, sizeof(base));

    if (r < 0 || stat(base, &st) < 0) {
        r = r < 0 ? r : -errno;
        snprintf(error, error_size, "Python '%.400s' not found: %s", python, strerror(-r));
        return r;
    }
    if (!S_ISDIR(st.st_mode)) {
        return snprintf(exe, size, "%s", base) < (int)size ? 0 : -ENAMETOOLONG;
    }
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (snprintf(exe, size, "%s/%s", base, names[i]) < (int)size && access(exe, X_OK) == 0) {
            return 0;
        }
    }
    snprintf(error, error_size, "Python '%.400s' is a directory without bin/python3", python);
    return -ENOENT;
}

/* Name the pyvenv.cfg of a venv whose executable is `exe`: <venv>/bin/python -> <venv>/. */
static int venv_config_path(const char *exe, char *out, size_t size)
{
    const char *name = strrchr(exe, '/');
    const char *bin = name;

    while (bin && bin > exe && *--bin != '/') {
    }
    if (!bin || bin == name || *bin != '/') {
        return -ENOENT;
    }
    int n = snprintf(out, size, "%.*s/pyvenv.cfg", (int)(bin - exe), exe);
    return n > 0 && (size_t)n < size ? 0 : -ENAMETOOLONG;
}

/* Whether `exe` is the interpreter that the linked libpython belongs to, after symlinks. */
static bool is_linked_python(const char *exe)
{
    char a[PATH_MAX], b[PATH_MAX];

    return realpath(exe, a) && realpath(SNAKEPIT_LINKED_PYTHON, b) && strcmp(a, b) == 0;
}

/*
 * Check that --python has the major.minor version of the linked libpython, and store its
 * executable in exe. A venv states its version in pyvenv.cfg next to bin/. The interpreter
 * that ships the linked libpython has the linked version. Any other interpreter is asked by
 * running it, which adds a few milliseconds to the start.
 */
static int check_python(const char *python, char *exe, size_t size, char *error,
                        size_t error_size)
{
    char cfg[PATH_MAX + 32];
    int major = 0, minor = 0, linked_major, linked_minor;
    int r = find_executable(python, exe, size, error, error_size);

    if (r < 0) {
        return r;
    }
    r = venv_config_path(exe, cfg, sizeof(cfg));
    if (r == 0) {
        r = venv_version(cfg, &major, &minor);
    }
    if (r == -ENOENT && is_linked_python(exe)) {
        return 0;
    }
    if (r == -ENOENT) {
        r = probe_version(exe, &major, &minor);
    }
    if (r < 0) {
        const char *reason = r == -ENOEXEC ? "asking it for sys.version_info failed; is it a "
                                             "Python interpreter?"
                                           : strerror(-r);
        snprintf(error, error_size, "Failed to find the version of Python '%.400s': %s", exe,
                 reason);
        return r;
    }
    if (parse_version(Py_GetVersion(), &linked_major, &linked_minor) < 0) {
        linked_major = PY_MAJOR_VERSION;
        linked_minor = PY_MINOR_VERSION;
    }
    if (major != linked_major || minor != linked_minor) {
        snprintf(error, error_size,
                 "Python '%.400s' is version %d.%d, but snakepit-worker is linked with libpython "
                 "%d.%d; use a %d.%d interpreter or build snakepit-worker against %d.%d",
                 python, major, minor, linked_major, linked_minor, linked_major, linked_minor,
                 major, minor);
        return -EINVAL;
    }
    return 0;
}

static int status_error(PyStatus status, char *error, size_t size)
{
    snprintf(error, size, "Failed to start Python%s%s: %s", status.func ? " in " : "",
             status.func ? status.func : "", status.err_msg ? status.err_msg : "unknown error");
    return -EINVAL;
}

static int init_interpreter(const WorkerZygoteOptions *opts, char *error, size_t size)
{
    char program[] = "snakepit-worker";
    char *argv[] = {program, NULL};
    char exe[PATH_MAX];
    PyConfig config;
    PyStatus status;
    int r = 0;

    if (worker_session_register() < 0) {
        snprintf(error, size, "Failed to register the _snakepit_worker module: out of memory");
        return -ENOMEM;
    }
    PyConfig_InitPythonConfig(&config);
    config.parse_argv = 0;
    config.install_signal_handlers = 1;
    status = PyConfig_SetBytesArgv(&config, 1, argv);
    if (!PyStatus_Exception(status) && opts->python) {
        r = check_python(opts->python, exe, sizeof(exe), error, size);
        if (r < 0) {
            goto out;
        }
        status = PyConfig_SetBytesString(&config, &config.program_name, exe);
        if (!PyStatus_Exception(status)) {
            status = PyConfig_SetBytesString(&config, &config.executable, exe);
        }
    }
    if (!PyStatus_Exception(status)) {
        status = Py_InitializeFromConfig(&config);
    }
    if (PyStatus_Exception(status)) {
        r = status_error(status, error, size);
    }
out:
    PyConfig_Clear(&config);
    return r;
}

/* Put the snakepit package first on sys.path. */
static int add_pythonpath(const char *dir)
{
    PyObject *path = PySys_GetObject("path"); /* borrowed */
    PyObject *entry = PyUnicode_DecodeFSDefault(dir);
    int r = -1;

    if (path && entry && PyList_Check(path)) {
        r = PyList_Insert(path, 0, entry);
    } else if (!PyErr_Occurred()) {
        PyErr_SetString(PyExc_RuntimeError, "sys.path is not a list");
    }
    Py_XDECREF(entry);
    return r;
}

/* Fix sys.executable, then import the preload modules, through snakepit._runtime. */
static int preload_modules(const char *preload)
{
    PyObject *runtime = PyImport_ImportModule("snakepit._runtime");
    PyObject *repaired = runtime ? PyObject_CallMethod(runtime, "repair_executable", NULL) : NULL;
    PyObject *result = repaired ? PyObject_CallMethod(runtime, "preload", "z", preload) : NULL;

    Py_XDECREF(repaired);
    Py_XDECREF(runtime);
    if (!result) {
        return -1;
    }
    Py_DECREF(result);
    return 0;
}

/*
 * Move every object made so far into the collector's permanent generation, so that collections
 * in the workers never write to the pages they share with the zygote.
 */
static int freeze_objects(void)
{
    PyObject *gc = PyImport_ImportModule("gc");
    PyObject *result = gc ? PyObject_CallMethod(gc, "freeze", NULL) : NULL;

    Py_XDECREF(gc);
    if (!result) {
        return -1;
    }
    Py_DECREF(result);
    return 0;
}

/* Start Python and import everything. On failure `error` contains the reason. */
static int prepare(const Zygote *z, char *error, size_t size)
{
    const WorkerZygoteOptions *opts = z->opts;

    set_blas_threads(opts->blas_threads);
    if (init_interpreter(opts, error, size) < 0) {
        return -1;
    }
    /*
     * No collections while importing: the imports make long-lived objects almost only, and
     * collecting them repeatedly costs about a tenth of the import time. Whatever cyclic garbage
     * the imports leave is frozen with the rest (a few hundred objects for numpy and pandas).
     * Workers enable the collector after fork.
     */
    PyGC_Disable();
    if (add_pythonpath(opts->pythonpath) < 0 || etf_py_init() < 0
        || worker_call_init(opts->allow, opts->adapter) < 0 || preload_modules(opts->preload) < 0
        || freeze_objects() < 0) {
        format_exception(error, size);
        return -1;
    }
    return 0;
}

static int count_threads(void)
{
    DIR *dir = opendir("/proc/self/task");
    struct dirent *entry;
    int n = 0;

    if (!dir) {
        return -errno;
    }
    while ((entry = readdir(dir))) {
        n += entry->d_name[0] != '.';
    }
    closedir(dir);
    return n;
}

static void warn_about_threads(Zygote *z)
{
    int threads = count_threads();

    if (threads > 1 && !z->warned_threads) {
        z->warned_threads = true;
        log_warning("Pool '%s': the zygote runs %d threads; workers get only the forking one, "
                    "so thread pools that preloaded modules started are missing in workers",
                    z->opts->pool, threads);
    }
}

static void close_fd(int fd)
{
    if (fd >= 0) {
        close(fd);
    }
}

/* Wait until the intermediate has exited and this process has been reparented. */
static int wait_for_reparent(pid_t intermediate)
{
    uint64_t deadline = log_now_ms() + WORKER_ZYGOTE_REPARENT_TIMEOUT_MS;

    if (getppid() != intermediate) {
        return 0;
    }
    int pidfd = pidfd_open_pid(intermediate);
    /* While it is still our parent, the pid cannot have been reused: the pidfd is the right one. */
    if (pidfd >= 0 && getppid() == intermediate) {
        struct pollfd pfd = {.fd = pidfd, .events = POLLIN};
        while (poll(&pfd, 1, WORKER_ZYGOTE_REPARENT_TIMEOUT_MS) < 0 && errno == EINTR) {
        }
    }
    close_fd(pidfd);
    while (getppid() == intermediate) {
        if (log_now_ms() > deadline) {
            return -ETIMEDOUT;
        }
        nanosleep(&(struct timespec){.tv_nsec = 1000 * 1000}, NULL);
    }
    return 0;
}

/* Default SIGPIPE and SIGCHLD, through the signal module so Python's view stays right. */
static void restore_signal_defaults(void)
{
    PyObject *signal_module = PyImport_ImportModule("signal");
    int signals[] = {SIGPIPE, SIGCHLD};

    for (size_t i = 0; i < sizeof(signals) / sizeof(signals[0]); i++) {
        PyObject *r = signal_module
                          ? PyObject_CallMethod(signal_module, "signal", "ii", signals[i], 0)
                          : NULL;
        if (!r) {
            PyErr_Clear();
            signal(signals[i], SIG_DFL);
        }
        Py_XDECREF(r);
    }
    Py_XDECREF(signal_module);
}

static _Noreturn void become_worker(Zygote *z, const ForkJob *job, pid_t intermediate)
{
    const WorkerZygoteOptions *opts = z->opts;
    uint32_t worker_id = job->worker_id;
    int r;

    PyOS_AfterFork_Child();
    close(z->control_fd);
    close_fd(z->daemon_pidfd);

    r = wait_for_reparent(intermediate);
    if (r < 0) {
        log_error_errno(r, "Worker %u: the intermediate process %d did not exit", worker_id,
                        (int)intermediate);
        _exit(WORKER_ZYGOTE_EXIT_CHILD_SETUP);
    }
    /* Set only now: the parent-death signal would fire when the intermediate exits. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) {
        log_error_errno(-errno, "Worker %u: failed to set the parent-death signal", worker_id);
        _exit(WORKER_ZYGOTE_EXIT_CHILD_SETUP);
    }
    if (getppid() != opts->daemon_pid) {
        log_error("Worker %u: parent is %d, not the daemon %d; exiting", worker_id,
                  (int)getppid(), (int)opts->daemon_pid);
        _exit(WORKER_ZYGOTE_EXIT_CHILD_SETUP);
    }
    int daemon_pidfd = pidfd_open_pid(opts->daemon_pid);
    if (daemon_pidfd < 0) {
        log_error_errno(daemon_pidfd, "Worker %u: failed to open a pidfd of the daemon %d",
                        worker_id, (int)opts->daemon_pid);
        _exit(WORKER_ZYGOTE_EXIT_CHILD_SETUP);
    }
    restore_signal_defaults();
    PyGC_Enable();
    r = worker_heartbeat_start(job->heartbeat_fd, daemon_pidfd);
    if (r < 0) {
        log_error_errno(r, "Worker %u: failed to start the heartbeat thread", worker_id);
        _exit(WORKER_ZYGOTE_EXIT_CHILD_SETUP);
    }
    WorkerServeParams params = {
        .request_fd = job->request_fd,
        .worker_id = worker_id,
        .max_depth = opts->max_depth,
        .max_message_bytes = opts->max_message_bytes,
    };
    worker_serve_run(&params);
}

static void close_job_fds(const ForkJob *job)
{
    close_fd(job->request_fd);
    close_fd(job->heartbeat_fd);
}

/*
 * The intermediate: fork one worker per job, report each pid or -errno on `report_fd` in job
 * order, and exit. Each worker keeps only its own job's fds.
 */
static _Noreturn void run_intermediate(Zygote *z, const ForkJob *jobs, size_t count,
                                       int report_fd)
{
    pid_t self = getpid();

    for (size_t i = 0; i < count; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            close(report_fd);
            for (size_t j = i + 1; j < count; j++) {
                close_job_fds(&jobs[j]);
            }
            become_worker(z, &jobs[i], self);
        }
        int32_t report = pid < 0 ? -errno : (int32_t)pid;
        ssize_t ignored = write(report_fd, &report, sizeof(report));
        (void)ignored;
        close_job_fds(&jobs[i]); /* so that later workers do not inherit them */
    }
    _exit(0);
}

/*
 * Read the intermediate's next report. Returns the worker pid, -ETIMEDOUT when none came within
 * the reparent timeout (a hung intermediate, for example a stopped one), or another -errno.
 */
static int read_report(int report_fd)
{
    struct pollfd pfd = {.fd = report_fd, .events = POLLIN};
    int32_t report;
    ssize_t n;
    int ready;

    do {
        ready = poll(&pfd, 1, WORKER_ZYGOTE_REPARENT_TIMEOUT_MS);
    } while (ready < 0 && errno == EINTR);
    if (ready == 0) {
        return -ETIMEDOUT;
    }
    do {
        n = read(report_fd, &report, sizeof(report));
    } while (n < 0 && errno == EINTR);
    return n == (ssize_t)sizeof(report) ? report : -EIO;
}

static void report_job(Zygote *z, const ForkJob *job, int r)
{
    if (r > 0) {
        log_debug("Pool '%s': forked worker %u as pid %d", z->opts->pool, job->worker_id, r);
        send_message(z, ZYGOTE_MSG_FORKED, job->worker_id, r, 0, NULL);
        return;
    }
    log_error_errno(r, "Pool '%s': failed to fork worker %u", z->opts->pool, job->worker_id);
    send_message(z, ZYGOTE_MSG_FORK_FAILED, job->worker_id, 0, -r, strerror(-r));
}

/* Fork the workers of `jobs` through one intermediate, report each to the daemon, close fds. */
static void fork_workers(Zygote *z, const ForkJob *jobs, size_t count)
{
    int pipe_fds[2] = {-1, -1};
    pid_t intermediate = -1;
    int r = 0;

    if (pipe2(pipe_fds, O_CLOEXEC) < 0) {
        r = -errno;
    }
    if (r == 0) {
        warn_about_threads(z);
        PyOS_BeforeFork();
        intermediate = fork();
        if (intermediate == 0) {
            close(pipe_fds[0]);
            run_intermediate(z, jobs, count, pipe_fds[1]);
        }
        r = intermediate < 0 ? -errno : 0;
        PyOS_AfterFork_Parent();
        close(pipe_fds[1]);
    }
    /* Report each job as soon as its pid arrives. After a failure the rest fail alike. */
    for (size_t i = 0; i < count; i++) {
        int pid = r < 0 ? r : read_report(pipe_fds[0]);
        /* NOTE: run by hand only (a 4 GB preload, the intermediate stopped with SIGSTOP): with
         * a small zygote a batch ends before a test can stop its intermediate. */
        if (r == 0 && pid == -ETIMEDOUT) {
            log_error("Pool '%s': the fork intermediate %d sent no pid for %d s; killing it",
                      z->opts->pool, (int)intermediate, WORKER_ZYGOTE_REPARENT_TIMEOUT_MS / 1000);
            kill(intermediate, SIGKILL); /* our own child, not reaped yet */
            r = pid;
        }
        report_job(z, &jobs[i], pid);
        close_job_fds(&jobs[i]);
    }
    close_fd(pipe_fds[0]);
    if (intermediate > 0) {
        int status;
        while (waitpid(intermediate, &status, 0) < 0 && errno == EINTR) {
        }
    }
}

/*
 * Receive one control message with up to two fds. Returns the number of fds, -EPIPE when the
 * daemon closed the socket, -EBADMSG for a malformed message (its fds closed), or -errno.
 */
static int receive_message(const Zygote *z, ZygoteMsg *msg, int fds[2], int flags)
{
    union {
        char buf[CMSG_SPACE(2 * sizeof(int))];
        struct cmsghdr align;
    } control;
    struct iovec iov = {.iov_base = msg, .iov_len = sizeof(*msg)};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                        .msg_controllen = sizeof(control.buf)};
    int nfds = 0;
    ssize_t n;

    do {
        n = recvmsg(z->control_fd, &mh, MSG_CMSG_CLOEXEC | flags);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        return -errno;
    }
    if (n == 0) {
        return -EPIPE;
    }
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
            continue;
        }
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            if (nfds < 2) {
                fds[nfds++] = fd;
            } else {
                close(fd);
            }
        }
    }
    if (n != (ssize_t)sizeof(*msg) || (mh.msg_flags & MSG_CTRUNC)) {
        for (int i = 0; i < nfds; i++) {
            close(fds[i]);
        }
        return -EBADMSG;
    }
    return nfds;
}

/* Wait until a control message or the daemon's exit; returns 1, 0 (stop) or -errno. */
static int wait_for_control(const Zygote *z)
{
    struct pollfd fds[2] = {
        {.fd = z->control_fd, .events = POLLIN},
        {.fd = z->daemon_pidfd, .events = POLLIN},
    };
    int n, saved_errno;

    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        n = poll(fds, z->daemon_pidfd >= 0 ? 2 : 1, -1);
        saved_errno = errno;
        Py_END_ALLOW_THREADS
        if (n >= 0) {
            break;
        }
        if (saved_errno != EINTR) {
            return -saved_errno;
        }
        if (PyErr_CheckSignals() < 0) {
            char text[256];
            format_exception(text, sizeof(text));
            log_info("Pool '%s': zygote stopping on %s", z->opts->pool, text);
            return 0;
        }
    }
    if (fds[1].revents) {
        log_info("Pool '%s': daemon %d exited, stopping the zygote", z->opts->pool,
                 (int)z->opts->daemon_pid);
        return 0;
    }
    return 1;
}

/*
 * Receive the next control message as a FORK job. Returns 1 for a job, 0 for a message that
 * was rejected or ignored, -EAGAIN when `flags` has MSG_DONTWAIT and none is queued, -EPIPE
 * when the daemon closed the socket, or another negative errno.
 */
static int next_job(Zygote *z, ForkJob *job, int flags)
{
    ZygoteMsg msg;
    int fds[2];
    int r = receive_message(z, &msg, fds, flags);

    if (r == -EBADMSG) {
        log_warning("Pool '%s': ignoring a malformed control message", z->opts->pool);
        return 0;
    }
    if (r < 0) {
        return r;
    }
    if (msg.type != ZYGOTE_MSG_FORK || r != 2) {
        log_warning("Pool '%s': ignoring control message %u with %d fds", z->opts->pool,
                    msg.type, r);
        for (int i = 0; i < r; i++) {
            close(fds[i]);
        }
        if (msg.type == ZYGOTE_MSG_FORK) {
            send_message(z, ZYGOTE_MSG_FORK_FAILED, msg.worker_id, 0, EBADMSG,
                         "FORK needs the request and heartbeat fds");
        }
        return 0;
    }
    *job = (ForkJob){.worker_id = msg.worker_id, .request_fd = fds[0], .heartbeat_fd = fds[1]};
    return 1;
}

static int serve_control(Zygote *z)
{
    ForkJob jobs[WORKER_ZYGOTE_FORK_BATCH_MAX];

    for (;;) {
        size_t count = 0;
        int r = wait_for_control(z);

        if (r <= 0) {
            return r;
        }
        /* The first message is there; take the FORKs queued behind it into the same batch. */
        int flags = 0;
        do {
            r = next_job(z, &jobs[count], flags);
            count += r == 1;
            flags = MSG_DONTWAIT;
        } while (r >= 0 && count < WORKER_ZYGOTE_FORK_BATCH_MAX);
        if (r == -EPIPE) {
            for (size_t i = 0; i < count; i++) {
                close_job_fds(&jobs[i]);
            }
            log_debug("Pool '%s': control socket closed, stopping the zygote", z->opts->pool);
            return 0;
        }
        if (count > 0) {
            fork_workers(z, jobs, count);
        }
        if (r < 0 && r != -EAGAIN) {
            return log_error_errno(r, "Pool '%s': failed to read the control socket",
                                   z->opts->pool);
        }
    }
}

static int check_control_socket(int fd)
{
    int type;
    socklen_t len = sizeof(type);

    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0) {
        return -errno;
    }
    if (type != SOCK_SEQPACKET) {
        return -ENOTSOCK;
    }
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
        return -errno;
    }
    return 0;
}

int worker_zygote_run(const WorkerZygoteOptions *opts)
{
    Zygote z = {.opts = opts, .control_fd = ZYGOTE_CONTROL_FD, .daemon_pidfd = -1};
    char error[ZYGOTE_MSG_TEXT_MAX];
    int r = check_control_socket(z.control_fd);

    if (r < 0) {
        log_error_errno(r, "Pool '%s': fd %d is not the zygote control socket (SOCK_SEQPACKET)",
                        opts->pool, ZYGOTE_CONTROL_FD);
        return WORKER_ZYGOTE_EXIT_SETUP_FAILED;
    }
    /* The daemon's stdout carries its READY line; print() in Python goes to stderr instead. */
    if (dup2(STDERR_FILENO, STDOUT_FILENO) < 0) {
        log_warning_errno(-errno, "Pool '%s': failed to point stdout at stderr", opts->pool);
    }
    r = pidfd_open_pid(opts->daemon_pid);
    if (r >= 0) {
        z.daemon_pidfd = r;
        fcntl(r, F_SETFD, FD_CLOEXEC);
    } else {
        log_warning_errno(r, "Pool '%s': failed to open a pidfd of the daemon %d", opts->pool,
                          (int)opts->daemon_pid);
    }

    if (prepare(&z, error, sizeof(error)) < 0) {
        log_error("Pool '%s': zygote setup failed: %s", opts->pool, error);
        send_message(&z, ZYGOTE_MSG_PRELOAD_FAILED, 0, 0, 0, error);
        return WORKER_ZYGOTE_EXIT_SETUP_FAILED;
    }
    char version[32];
    snprintf(version, sizeof(version), "%s", Py_GetVersion());
    version[strcspn(version, " ")] = '\0';
    send_message(&z, ZYGOTE_MSG_READY, 0, getpid(), 0, version);
    log_info("Pool '%s': zygote ready with Python %s", opts->pool, version);

    r = serve_control(&z);
    close_fd(z.daemon_pidfd);
    return r < 0 ? 1 : 0;
}
