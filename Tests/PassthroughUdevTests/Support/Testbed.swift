import Testing
import CUmockdev
import Glibc

/// Whether this process runs with umockdev's preload library (`umockdev-wrapper swift test ...`).
enum Umockdev {
    static var isPreloaded: Bool {
        guard let preload = getenv("LD_PRELOAD") else { return false }
        return String(cString: preload).contains("umockdev")
    }

    static let skipReason: Comment = "needs libumockdev-preload: run under `umockdev-wrapper swift test`"
}

struct TestbedError: Error, CustomStringConvertible {
    var description: String
}

/// An in-process umockdev testbed: while it lives, libudev in this process sees only its fake
/// `/sys`. There is one per process at a time (it sets `UMOCKDEV_DIR`), hence `.serialized`.
/// Create monitors after the testbed, so their netlink socket is the emulated one.
final class Testbed {
    private let testbed: UnsafeMutablePointer<UMockdevTestbed>

    init() throws {
        guard let testbed = umockdev_testbed_new() else { throw TestbedError(description: "umockdev_testbed_new failed") }
        self.testbed = testbed
    }

    deinit {
        CUmockdev_unref(testbed)
    }

    /// Adds devices from umockdev's text format (`P:`, `E:`, `A:`, `L:` lines).
    func add(_ description: String) throws {
        var error: UnsafeMutablePointer<GError>?
        guard umockdev_testbed_add_from_string(testbed, description, &error) != 0 else {
            let message = error.map { String(cString: $0.pointee.message) } ?? "unknown error"
            if let error { g_error_free(error) }
            throw TestbedError(description: "umockdev_testbed_add_from_string: \(message)")
        }
    }

    /// Sends a uevent carrying the device's current `E:` properties.
    func uevent(_ syspath: String, _ action: String) {
        umockdev_testbed_uevent(testbed, syspath, action)
    }

    func setProperty(_ syspath: String, _ name: String, _ value: String) {
        umockdev_testbed_set_property(testbed, syspath, name, value)
    }

    /// The fake `/sys` root; a child process sees the testbed when given it as `UMOCKDEV_DIR`.
    var rootDirectory: String {
        guard let root = umockdev_testbed_get_root_dir(testbed) else { return "" }
        defer { g_free(root) }
        return String(cString: root)
    }

    func remove(_ syspath: String) {
        umockdev_testbed_remove_device(testbed, syspath)
    }
}

/// A root port at 0000:00:01.0 with an Alveo (10ee:903f, bound to xdma) at 0000:01:00.0 behind it.
enum FakeAlveo {
    static let rootPortSyspath = "/sys/devices/pci0000:00/0000:00:01.0"
    static let syspath = "/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0"

    static let description = """
        P: /devices/pci0000:00/0000:00:01.0
        E: DRIVER=pcieport
        E: PCI_CLASS=60400
        E: PCI_ID=8086:A110
        E: PCI_SUBSYS_ID=8086:7270
        E: PCI_SLOT_NAME=0000:00:01.0
        E: SUBSYSTEM=pci
        A: vendor=0x8086
        A: device=0xa110
        A: class=0x060400

        P: /devices/pci0000:00/0000:00:01.0/0000:01:00.0
        E: DRIVER=xdma
        E: PCI_CLASS=58000
        E: PCI_ID=10EE:903F
        E: PCI_SUBSYS_ID=10EE:0007
        E: PCI_SLOT_NAME=0000:01:00.0
        E: MODALIAS=pci:v000010EEd0000903Fsv000010EEsd00000007bc05sc80i00
        E: SUBSYSTEM=pci
        A: vendor=0x10ee
        A: device=0x903f
        A: class=0x058000
        L: driver=../../../../bus/pci/drivers/xdma


        """

    /// A device in subsystem `pci` whose name is no PCI address and that has no `PCI_SLOT_NAME`.
    static let bogusSyspath = "/sys/devices/pci0000:00/0000:00:01.0/bogus"
    static let bogusDescription = """
        P: /devices/pci0000:00/0000:00:01.0/bogus
        E: SUBSYSTEM=pci
        A: vendor=0x10ee


        """
}
