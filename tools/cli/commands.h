// The commands of `sendense-restore`. Each takes its own arguments (after
// the command words), prints its result on stdout, and returns the exit
// status. Errors are thrown: Error / std::exception -> exit 1, UsageError -> 2
// (restore_main.cpp prints them as one line).
#pragma once

#include "tools/cli/args.h"

namespace sendense::cli {

inline constexpr const char* kDefaultCatalog = "/var/lib/sendense-restore/catalog.db";

int catalog_import(int argc, char** argv, int first);  // catalog import DIR
int catalog_add(int argc, char** argv, int first);     // catalog add --id ID --path IMAGE ...
int catalog_list(int argc, char** argv, int first);    // catalog list [--json]
int catalog_remove(int argc, char** argv, int first);  // catalog remove ID
int status(int argc, char** argv, int first);          // status [--json]
int inspect(int argc, char** argv, int first);         // inspect IMAGE [--format F] [--json] [--no-replay]

}  // namespace sendense::cli
