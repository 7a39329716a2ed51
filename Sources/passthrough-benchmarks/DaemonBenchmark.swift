internal import CUmockdev
import Foundation
import PassthroughTestSupport

/// The real `passthrough-agent run` in a child process, seeing a umockdev testbed as its udev:
/// time to READY, RSS after start and after a storm of uevents, CPU time for the storm, and
/// wake-ups per second while idle. After the agent's start, in the same testbed, the floor (Tests/EndToEnd/floor/floor.c: libvirt,
/// libudev and libsystemd linked, the same libvirt URI, a udev monitor, idle) for the RSS the agent is held to.
enum DaemonBenchmark {
    struct Result {
        var timeToReady: Duration
        var rssAfterStart: Int
        var idleWakeupsPerSecond: Double
        var idleSeconds: Int
        var stormEvents: Int
        var stormCPU: Duration
        var stormWall: Duration
        var rssAfterStorm: Int
        var threads: Int
        var exitStatus: Int32
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static let bystander = "/sys/devices/pci0000:00/0000:00:1c.0/0000:03:00.0"
    static let testbedDescription = """
        P: /devices/pci0000:00/0000:00:1c.0
        E: DRIVER=pcieport
        E: PCI_ID=8086:A33C
        E: PCI_SLOT_NAME=0000:00:1c.0
        E: SUBSYSTEM=pci
        A: vendor=0x8086
        A: device=0xa33c

        P: /devices/pci0000:00/0000:00:1c.0/0000:03:00.0
        E: DRIVER=e1000e
        E: PCI_ID=8086:10D3
        E: PCI_SLOT_NAME=0000:03:00.0
        E: SUBSYSTEM=pci
        A: vendor=0x8086
        A: device=0x10d3
        L: driver=../../../../bus/pci/drivers/e1000e

        """

    /// `onStart`: the RSS line's figures (agent, floor) as soon as they are known, so a storm that ends the
    /// run (umockdev's sender aborts when the agent drains too slowly) does not take them with it.
    static func run(agent: URL, floor: URL?, idleSeconds: Int, stormEvents: Int,
                    onStart: (_ agentRSS: Int, _ floorRSS: Int?) -> Void) throws -> Result {
        guard let testbed = umockdev_testbed_new() else { throw Failure(description: "umockdev_testbed_new failed") }
        defer { CUmockdev_unref(testbed) }
        var error: UnsafeMutablePointer<GError>?
        guard umockdev_testbed_add_from_string(testbed, testbedDescription, &error) != 0 else {
            throw Failure(description: "cannot describe the testbed")
        }
        let rootDirectory = umockdev_testbed_get_root_dir(testbed).map { pointer in
            defer { g_free(pointer) }
            return String(cString: pointer)
        } ?? ""

        // The card the agent manages lives in a temp-dir sysfs; its udev is the testbed.
        let sysfs = FakeSysfs()
        sysfs.addDriver("xdma")
        sysfs.addDriver("vfio-pci")
        sysfs.addFunction("0000:05:00.0", id: "10ee:903f", driver: "xdma", iommuGroup: 5)
        sysfs.writeFileCreatingDirectories("etc/config.toml", """
            [libvirt]
            uri = "test:///default"
            [[card]]
            name = "u200"
            address = "0000:05:00"
            guest = "test"
            """)
        let notify = try NotifySocket(path: NSTemporaryDirectory() + "passthrough-bench-notify-\(getpid())")
        let process = child(agent, ["run", "--dry-run", "--config", sysfs.root.appending("etc/config.toml").string,
                                    "--sysfs-root", sysfs.root.string, "--control-socket", sysfs.root.appending("control").string],
                            umockdev: rootDirectory, notify: notify)

        let started = ContinuousClock.now
        try process.run()
        defer { if process.isRunning { process.terminate() } }
        guard notify.waitFor("READY=1", timeout: .seconds(60)) != nil else { throw Failure(description: "the agent never sent READY=1") }
        let timeToReady = ContinuousClock.now - started
        let probe = ProcessProbe(pid: process.processIdentifier)
        Thread.sleep(forTimeInterval: 1)
        let rssAfterStart = probe.residentKiB
        // The floor idles beside the idle agent: both see the same testbed and libvirt, neither is busy.
        onStart(rssAfterStart, try floor.map { try floorResident($0, umockdev: rootDirectory) })

        let switchesBefore = probe.switchesByThread
        Thread.sleep(forTimeInterval: TimeInterval(idleSeconds))
        let idleWakeups = Double(probe.wakeups(since: switchesBefore)) / Double(idleSeconds)

        // umockdev's sender aborts when its socket is full: send small batches, and the next one only
        // once the agent has woken up and gone back to sleep (it drained the batch).
        let cpuBefore = probe.cpuTime
        let stormStart = ContinuousClock.now
        var sent = 0
        while sent < stormEvents {
            let switches = probe.contextSwitches
            for _ in 0..<min(4, stormEvents - sent) {
                umockdev_testbed_uevent(testbed, bystander, sent.isMultiple(of: 2) ? "unbind" : "bind")
                sent += 1
            }
            let deadline = ContinuousClock.now + .milliseconds(50)
            while probe.contextSwitches == switches, ContinuousClock.now < deadline { usleep(100) }
            usleep(200)
        }
        Thread.sleep(forTimeInterval: 1)
        let stormWall = ContinuousClock.now - stormStart
        let stormCPU = probe.cpuTime - cpuBefore
        let rssAfterStorm = probe.residentKiB
        let threads = probe.threads

        process.terminate()
        process.waitUntilExit()
        return Result(timeToReady: timeToReady, rssAfterStart: rssAfterStart, idleWakeupsPerSecond: idleWakeups,
                      idleSeconds: idleSeconds, stormEvents: stormEvents, stormCPU: stormCPU, stormWall: stormWall,
                      rssAfterStorm: rssAfterStorm, threads: threads, exitStatus: process.terminationStatus)
    }

    /// The floor's RSS, measured as the agent's is: 1 s after READY=1, same testbed, same libvirt URI. Its card
    /// (0000:05:00.0) never sends `add` here, so it only idles.
    static func floorResident(_ floor: URL, umockdev rootDirectory: String) throws -> Int {
        let notify = try NotifySocket(path: NSTemporaryDirectory() + "passthrough-bench-floor-notify-\(getpid())")
        let process = child(floor, ["test:///default", "0000:05:00.0", "test"], umockdev: rootDirectory, notify: notify)
        try process.run()
        defer {
            process.terminate()
            process.waitUntilExit()
        }
        guard notify.waitFor("READY=1", timeout: .seconds(60)) != nil else { throw Failure(description: "the floor never sent READY=1") }
        Thread.sleep(forTimeInterval: 1)
        return ProcessProbe(pid: process.processIdentifier).residentKiB
    }

    /// A child seeing the testbed as its udev and `notify` as its NOTIFY_SOCKET, output discarded.
    static func child(_ executable: URL, _ arguments: [String], umockdev rootDirectory: String, notify: NotifySocket) -> Process {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment["UMOCKDEV_DIR"] = rootDirectory
        environment["NOTIFY_SOCKET"] = notify.path
        process.environment = environment
        process.standardError = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        return process
    }
}
