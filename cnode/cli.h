/* SPDX-License-Identifier: Apache-2.0 */
/* The daemon's command line: flags override the config file, which overrides the defaults. */
#pragma once

#include <stdio.h>

#include "config.h"

typedef enum {
    CLI_RUN,
    CLI_EXIT_OK,     /* --help or --version was printed */
    CLI_EXIT_USAGE,  /* exit 64 */
    CLI_EXIT_CONFIG, /* exit 78 */
} CliResult;

/* Parse argv into `config` (initialised with config_init), loading --config when given. */
CliResult cli_parse(int argc, char **argv, Config *config, FILE *out, FILE *err);
