import PassthroughCore
import PassthroughSysfs
import SystemPackage

/// Finds the processes that have a VFIO file of some PCI functions open, by reading `/proc/PID/fd`.
///
/// A process holds a function through the VFIO group of its IOMMU group (`/dev/vfio/GROUP`: on Linux 6.1
/// every user of a vfio-pci device keeps it open, and the kernel does not let the last device of a group
/// go while it is) or, from Linux 6.6, through the function's own VFIO device (`/dev/vfio/devices/vfioN`).
/// Both are character devices registered by the kernel with their number in sysfs: `class/vfio/<group>/dev`
/// (`vfio_create_group` names the device after the IOMMU group, `noiommu-` in front without an IOMMU) and
/// `<function>/vfio-dev/vfioN/dev`. Open files are compared by that number, with `stat` through each fd
/// link: the agent has no `/dev` of its own (`PrivateDevices=yes`), and a link's text is only a name.
///
/// Reading another user's fds takes CAP_DAC_READ_SEARCH (the `fd` directory is 0500) and CAP_SYS_PTRACE (the
/// kernel's ptrace check on following the links); without them every such process comes out unreadable.
struct VFIOHolderScan: Sendable {
    let host: HostEnvironment

    struct Findings: Hashable, Sendable {
        var holders: [Holder] = []
        /// What could not be read, in words: any of it means "unknown", hands off.
        var unknowns: [String] = []
    }

    func scan(_ functions: Set<PCIAddress>) -> Findings {
        var findings = Findings()
        let files = vfioFiles(of: functions, into: &findings)
        // No VFIO file exists for them: no process can hold them that way.
        guard !files.isEmpty else { return findings }

        let processes: [String]
        do {
            processes = try host.io.list(host.procRoot)
        } catch {
            findings.unknowns.append("cannot list the processes in \(host.procRoot): \(error)")
            return findings
        }
        for pid in processes.compactMap(Self.pid).sorted() {
            let held = devicesHeld(by: pid, among: files, into: &findings)
            for number in held {
                guard let file = files[number] else { continue }
                findings.holders.append(.process(
                    pid: pid, command: command(of: pid), device: file.node, functions: file.functions.sorted()))
            }
        }
        return findings
    }

    /// One VFIO character device: the name udev gives its node, and which of the functions it reaches.
    private struct VFIOFile {
        var node: String
        var functions: Set<PCIAddress>
    }

    /// The VFIO files of `functions`, by device number.
    private func vfioFiles(of functions: Set<PCIAddress>, into findings: inout Findings) -> [DeviceNumber: VFIOFile] {
        var files: [DeviceNumber: VFIOFile] = [:]
        func add(_ attribute: FilePath, node: String, for address: PCIAddress) {
            do {
                let text = try host.io.read(attribute)
                guard let number = DeviceNumber(sysfsText: text) else {
                    findings.unknowns.append("\(attribute) holds no device number: \(text.debugDescription)")
                    return
                }
                files[number, default: VFIOFile(node: node, functions: [])].functions.insert(address)
            } catch where error.isNotFound {
                // Not registered with VFIO (not on vfio-pci, or a kernel without that interface).
            } catch {
                findings.unknowns.append("cannot read \(attribute): \(error)")
            }
        }

        for address in functions.sorted() {
            do {
                if let group = try host.reader.iommuGroup(of: address) {
                    for name in ["\(group)", "noiommu-\(group)"] {
                        add(host.sysfs.vfioGroups.appending("\(name)/dev"), node: "/dev/vfio/\(name)", for: address)
                    }
                }
            } catch {
                findings.unknowns.append("cannot read the IOMMU group of \(address): \(error)")
            }
            let devices = host.sysfs.attribute("vfio-dev", of: address)
            do {
                for name in try host.io.list(devices) {
                    add(devices.appending("\(name)/dev"), node: "/dev/vfio/devices/\(name)", for: address)
                }
            } catch where error.isNotFound {
                // Linux before 6.6, or not on a VFIO driver.
            } catch {
                findings.unknowns.append("cannot list \(devices): \(error)")
            }
        }
        return files
    }

    /// Which of `files` the process has open, in the order of its fds; nothing once it has exited.
    private func devicesHeld(
        by pid: Int32, among files: [DeviceNumber: VFIOFile], into findings: inout Findings
    ) -> [DeviceNumber] {
        let directory = host.procRoot.appending("\(pid)/fd")
        var held: [DeviceNumber] = []
        do {
            for fd in try host.io.list(directory) {
                do {
                    if let number = try host.io.characterDevice(at: directory.appending(fd)), files[number] != nil,
                       !held.contains(number) {
                        held.append(number)
                    }
                } catch where Self.isGone(error) {
                    // Closed since the listing.
                }
            }
        } catch where Self.isGone(error) {
            // Exited since the listing.
        } catch {
            let name = command(of: pid).map { " (\($0))" } ?? ""
            findings.unknowns.append(
                "cannot read the open files of pid \(pid)\(name): \(error.errno); the agent needs CAP_SYS_PTRACE and "
                    + "CAP_DAC_READ_SEARCH to see whether it holds a VFIO device")
        }
        return held
    }

    /// The process's `comm`: readable without ptrace rights, and unlike `cmdline` it never waits on the
    /// target's memory lock, which a wedged QEMU may hold.
    private func command(of pid: Int32) -> String? {
        guard let text = try? host.io.read(host.procRoot.appending("\(pid)/comm")),
              let line = text.split(separator: "\n").first, !line.isEmpty
        else { return nil }
        return String(line)
    }

    /// `/proc` entries that are processes: all digits.
    private static func pid(_ name: String) -> Int32? {
        guard !name.isEmpty, name.utf8.allSatisfy({ (0x30...0x39).contains($0) }) else { return nil }
        return Int32(name)
    }

    /// The process or the fd went away between two reads: not an error, nothing held.
    private static func isGone(_ error: SysfsError) -> Bool {
        error.errno == .noSuchFileOrDirectory || error.errno == .noSuchProcess
    }
}
