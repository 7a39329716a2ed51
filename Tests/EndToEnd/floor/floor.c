/* The floor: the least a program can do to put a reflashed card back into its guest, so the agent's
 * times and memory have something honest to be measured against (issue 14). A persistent libvirt
 * connection and a libudev monitor (subsystem pci); on the card's `add`: driver_override = vfio-pci,
 * unbind the host driver if there is one, drivers_probe, virDomainAttachDeviceFlags(LIVE). Nothing
 * else: no checks, no verification, no retries, no state. Not a product; never installed by `make install`.
 *
 *   passthrough-floor URI BDF GUEST      e.g. passthrough-floor qemu:///system 0000:01:00.0 l2
 *
 * It sends READY=1 (sd_notify) once the connection and the monitor are up, so `systemd-run -p Type=notify`
 * returns when it can act, and logs one line per step with CLOCK_REALTIME for the journal's timeline.
 * Used twice: the e2e rig's floor round (Tests/EndToEnd/scenarios.py, floor) and `make bench`'s RSS floor,
 * where it idles with test:///default and a BDF that never appears.
 */
#include <errno.h>
#include <fcntl.h>
#include <libudev.h>
#include <libvirt/libvirt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

static void say(const char *what, const char *detail) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    fprintf(stderr, "%lld.%06ld %s %s\n", (long long)now.tv_sec, now.tv_nsec / 1000, what, detail ? detail : "");
}

static void write_file(const char *path, const char *value) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, value, strlen(value)) < 0) {
        say("write failed", path);
    }
    if (fd >= 0) {
        close(fd);
    }
}

static void reattach(virConnectPtr conn, const char *bdf, const char *guest, const char *xml) {
    char path[256];
    say("add", bdf);
    snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/driver_override", bdf);
    write_file(path, "vfio-pci");
    snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/driver/unbind", bdf);
    if (access(path, F_OK) == 0) {
        write_file(path, bdf);
    }
    write_file("/sys/bus/pci/drivers_probe", bdf);
    say("probed", bdf);
    virDomainPtr domain = virDomainLookupByName(conn, guest);
    int rc = domain ? virDomainAttachDeviceFlags(domain, xml, VIR_DOMAIN_AFFECT_LIVE) : -1;
    say(rc == 0 ? "attached" : "attach failed", guest);
    if (domain) {
        virDomainFree(domain);
    }
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s URI BDF GUEST\n", argv[0]);
        return 64;
    }
    const char *uri = argv[1], *bdf = argv[2], *guest = argv[3];
    unsigned domain, bus, slot, function;
    if (sscanf(bdf, "%4x:%2x:%2x.%1x", &domain, &bus, &slot, &function) != 4) {
        fprintf(stderr, "%s: not a PCI address (DDDD:BB:SS.F)\n", bdf);
        return 64;
    }
    char xml[512];
    snprintf(xml, sizeof xml,
             "<hostdev mode='subsystem' type='pci' managed='no'><source><address domain='0x%04x' bus='0x%02x' "
             "slot='0x%02x' function='0x%x'/></source></hostdev>",
             domain, bus, slot, function);

    virConnectPtr conn = virConnectOpen(uri);
    if (!conn) {
        fprintf(stderr, "cannot connect to %s\n", uri);
        return 69;
    }
    struct udev *udev = udev_new();
    struct udev_monitor *monitor = udev ? udev_monitor_new_from_netlink(udev, "udev") : NULL;
    if (!monitor || udev_monitor_filter_add_match_subsystem_devtype(monitor, "pci", NULL) < 0 ||
        udev_monitor_enable_receiving(monitor) < 0) {
        fprintf(stderr, "cannot monitor udev\n");
        return 69;
    }
    struct pollfd pfd = {.fd = udev_monitor_get_fd(monitor), .events = POLLIN};
    sd_notify(0, "READY=1");
    say("ready", uri);
    for (;;) {
        if (poll(&pfd, 1, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            return 70;
        }
        struct udev_device *device = udev_monitor_receive_device(monitor);
        if (!device) {
            continue;
        }
        const char *action = udev_device_get_action(device);
        if (action && strcmp(action, "add") == 0 && strcmp(udev_device_get_sysname(device), bdf) == 0) {
            reattach(conn, bdf, guest, xml);
        }
        udev_device_unref(device);
    }
}
