#if canImport(Glibc)
import Glibc
#endif
import PassthroughCore
import PassthroughSysfs
import SystemPackage
import Testing

/// Under umockdev-wrapper another suite's testbed may stand in for /sys at any moment.
private let umockdevPreloaded: Bool = {
    guard let preload = getenv("LD_PRELOAD") else { return false }
    return String(decoding: UnsafeRawBufferPointer(start: preload, count: strlen(preload)), as: UTF8.self).contains("umockdev")
}()

private let hostFunctions: [PCIAddress] = {
    ((try? LinuxSysfsIO().list("/sys/bus/pci/devices")) ?? []).compactMap(PCIAddress.init)
}()

/// Read-only checks against this machine's real `/sys`: the pread path agrees with the kernel's
/// own `vendor`/`device` attributes. Nothing is ever written here.
@Suite("Config space on this host (read only)",
       .enabled(if: !umockdevPreloaded, "the real /sys is hidden under umockdev-wrapper; runs in the plain pass of make test"),
       .enabled(if: !hostFunctions.isEmpty, "no PCI functions in /sys"))
struct HostConfigSpaceTests {
    @Test("the vendor ID read from config matches the vendor attribute, for every function")
    func vendorIDs() throws {
        let layout = SysfsLayout()
        for address in hostFunctions {
            let attribute = try LinuxSysfsIO().read(layout.attribute("vendor", of: address))
            let expected = UInt16(attribute.dropFirst(2).prefix(4), radix: 16)
            #expect(try ConfigSpace(address: address, layout: layout, io: LinuxSysfsIO()).vendorID() == (try #require(expected)), "\(address)")
        }
    }

    @Test("the capability walk ends on every function: found, or no PCI Express capability")
    func capabilityWalk() {
        let layout = SysfsLayout()
        for address in hostFunctions {
            do {
                let offset = try ConfigSpace(address: address, layout: layout, io: LinuxSysfsIO()).expressCapability()
                #expect(offset >= 0x40 && offset < 0x100 && offset % 4 == 0, "\(address)")
            } catch {
                #expect(error == .noExpressCapability(address), "\(address)")
            }
        }
    }
}
