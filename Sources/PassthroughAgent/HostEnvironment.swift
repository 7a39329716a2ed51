import PassthroughSysfs
import SystemPackage

/// Where the host's kernel interfaces are: `/sys` and `/proc`, or a test tree.
public struct HostEnvironment: Sendable {
    public var sysfs: SysfsLayout
    public var procRoot: FilePath
    public var io: any SysfsIO

    public init(sysfsRoot: FilePath = "/sys", procRoot: FilePath = "/proc", io: any SysfsIO = LinuxSysfsIO()) {
        self.sysfs = SysfsLayout(root: sysfsRoot)
        self.procRoot = procRoot
        self.io = io
    }

    public var reader: PCISysfsReader { PCISysfsReader(layout: sysfs, io: io) }

    func readProc(_ name: String) -> String? {
        try? io.read(procRoot.appending(name))
    }
}
