/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Process metrics from procfs (proc(5)): CPU time, memory and start time from /proc/self/stat,
 * the boot time from /proc/stat, open descriptors by listing /proc/self/fd, and the descriptor
 * limit from getrlimit(RLIMIT_NOFILE). A value that cannot be read keeps its last value.
 */
#include "metrics_process.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

typedef struct {
    MetricsCounter *cpu_seconds;
    MetricsGauge *resident_bytes;
    MetricsGauge *virtual_bytes;
    MetricsGauge *open_fds;
    MetricsGauge *max_fds;
    MetricsGauge *start_time;
    double boot_time; /* seconds since the epoch, 0 until read */
} ProcessMetrics;

typedef struct {
    unsigned long long utime, stime, starttime, vsize;
    long long rss;
} ProcStat;

/* Parse the fields after the command name, which may itself contain spaces and parentheses. */
static int read_proc_stat(ProcStat *out)
{
    char line[1024];
    ProcStat st;
    char *p;
    FILE *f;
    int n;

    f = fopen("/proc/self/stat", "re");
    if (!f) {
        return -errno;
    }
    p = fgets(line, sizeof(line), f);
    fclose(f);
    if (!p || !(p = strrchr(line, ')'))) {
        return -EIO;
    }
    /* Fields 3 to 24 of proc(5): state ... utime(14) stime(15) ... starttime(22) vsize rss. */
    n = sscanf(p + 1,
               " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d %*d "
               "%llu %llu %lld",
               &st.utime, &st.stime, &st.starttime, &st.vsize, &st.rss);
    if (n != 5) {
        return -EIO;
    }
    *out = st;
    return 0;
}

static double read_boot_time(void)
{
    char line[256];
    double btime = 0;
    FILE *f;

    f = fopen("/proc/stat", "re");
    if (!f) {
        return 0;
    }
    while (fgets(line, sizeof(line), f)) {
        unsigned long long value;

        if (sscanf(line, "btime %llu", &value) == 1) {
            btime = (double)value;
            break;
        }
    }
    fclose(f);
    return btime;
}

static int count_open_fds(void)
{
    struct dirent *entry;
    int count = 0;
    DIR *dir;

    dir = opendir("/proc/self/fd");
    if (!dir) {
        return -errno;
    }
    while ((entry = readdir(dir))) {
        if (entry->d_name[0] != '.') {
            count++;
        }
    }
    closedir(dir);
    /* Do not count the descriptor of the listing itself. */
    return count - 1;
}

static void process_collect(void *userdata)
{
    ProcessMetrics *m = userdata;
    long ticks = sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    struct rlimit limit;
    ProcStat st;
    int fds;

    if (ticks > 0 && page > 0 && read_proc_stat(&st) == 0) {
        m->cpu_seconds->value = (double)(st.utime + st.stime) / (double)ticks;
        metrics_gauge_set(m->virtual_bytes, (double)st.vsize);
        metrics_gauge_set(m->resident_bytes, (double)st.rss * (double)page);
        if (m->boot_time == 0) {
            m->boot_time = read_boot_time();
        }
        if (m->boot_time > 0) {
            metrics_gauge_set(m->start_time, m->boot_time + (double)st.starttime / (double)ticks);
        }
    }
    fds = count_open_fds();
    if (fds >= 0) {
        metrics_gauge_set(m->open_fds, fds);
    }
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
        metrics_gauge_set(m->max_fds,
                          limit.rlim_cur == RLIM_INFINITY ? -1.0 : (double)limit.rlim_cur);
    }
}

static int register_one(MetricsRegistry *registry, MetricsType type, const char *name,
                        const char *help, MetricsFamily **out)
{
    MetricsFamilyOptions options = {.type = type, .name = name, .help = help};

    return metrics_register(registry, &options, out);
}

int metrics_process_register(MetricsRegistry *registry)
{
    MetricsFamily *cpu, *rss, *vsize, *open_fds, *max_fds, *start;
    ProcessMetrics *m;
    int r;

    r = register_one(registry, METRICS_COUNTER, "process_cpu_seconds_total",
                     "Total user and system CPU time spent in seconds.", &cpu);
    if (r == 0) {
        r = register_one(registry, METRICS_GAUGE, "process_resident_memory_bytes",
                         "Resident memory size in bytes.", &rss);
    }
    if (r == 0) {
        r = register_one(registry, METRICS_GAUGE, "process_virtual_memory_bytes",
                         "Virtual memory size in bytes.", &vsize);
    }
    if (r == 0) {
        r = register_one(registry, METRICS_GAUGE, "process_open_fds",
                         "Number of open file descriptors.", &open_fds);
    }
    if (r == 0) {
        r = register_one(registry, METRICS_GAUGE, "process_max_fds",
                         "Maximum number of open file descriptors.", &max_fds);
    }
    if (r == 0) {
        r = register_one(registry, METRICS_GAUGE, "process_start_time_seconds",
                         "Start time of the process since unix epoch in seconds.", &start);
    }
    if (r < 0) {
        return r;
    }
    m = calloc(1, sizeof(*m));
    if (!m) {
        return -ENOMEM;
    }
    m->cpu_seconds = metrics_counter_get(cpu, NULL, 0);
    m->resident_bytes = metrics_gauge_get(rss, NULL, 0);
    m->virtual_bytes = metrics_gauge_get(vsize, NULL, 0);
    m->open_fds = metrics_gauge_get(open_fds, NULL, 0);
    m->max_fds = metrics_gauge_get(max_fds, NULL, 0);
    m->start_time = metrics_gauge_get(start, NULL, 0);
    return metrics_registry_add_collector(registry, process_collect, free, m);
}
