// passthrough-fuzz TARGET [libFuzzer options] [corpus directories]
//
// libFuzzer on one parser of untrusted bytes; TARGET is config, uevent, live-xml, control or guest. The program's
// main() is libFuzzer's own (-sanitize=fuzzer links it whole): SwiftPM gives a Swift executable a main()
// of its own, which would clash with it, so this executable is C and the harnesses are Swift functions
// in PassthroughFuzzTargets. Built only by `make fuzz` (Tests/Fuzz/run.sh).
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int (*one_input)(const uint8_t *data, size_t size);

// Tests/Fuzz/Harnesses/PassthroughFuzzTargets, @_cdecl.
int passthrough_fuzz_config(const uint8_t *data, size_t size);
int passthrough_fuzz_uevent(const uint8_t *data, size_t size);
int passthrough_fuzz_live_xml(const uint8_t *data, size_t size);
int passthrough_fuzz_control(const uint8_t *data, size_t size);
int passthrough_fuzz_guest(const uint8_t *data, size_t size);

static const struct {
    const char *name;
    one_input run;
} targets[] = {
    {"config", passthrough_fuzz_config},
    {"uevent", passthrough_fuzz_uevent},
    {"live-xml", passthrough_fuzz_live_xml},
    {"control", passthrough_fuzz_control},
    {"guest", passthrough_fuzz_guest},
};

static one_input selected;

// libFuzzer calls this before it reads its options: take TARGET out of argv (argv[0] must stay as it is).
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    for (size_t i = 0; *argc >= 2 && i < sizeof targets / sizeof targets[0]; i++) {
        if (strcmp((*argv)[1], targets[i].name) == 0) {
            selected = targets[i].run;
            (*argv)[1] = (*argv)[0];
            (*argv)++;
            (*argc)--;
            return 0;
        }
    }
    fprintf(stderr, "usage: passthrough-fuzz config|uevent|live-xml|control|guest [libFuzzer options] [corpus directories]\n");
    exit(64);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return selected(data, size);
}
