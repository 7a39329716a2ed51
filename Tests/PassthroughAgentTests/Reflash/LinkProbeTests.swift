import PassthroughAgent
import PassthroughCore
import PassthroughSysfs
import PassthroughTestSupport
import SystemPackage
import Testing

@Suite("Link watch probe")
struct LinkProbeTests {
    @Test("present, all-ones, EIO, ENODEV, removed, and an inconclusive EACCES")
    func probe() {
        let bus = reflashHost()
        let probe = LinkProbe(layout: bus.sysfs.layout, io: bus)
        #expect(probe.probe(cardFunction) == .present(vendorID: 0x10EE))
        bus.dropLink("0000:01:00")
        #expect(probe.probe(cardFunction) == .lost(.allOnes))
        bus.restoreLink("0000:01:00")
        for errno in [Errno.ioError, .operationNotSupportedByDevice] {
            bus.failReads(of: "bus/pci/devices/0000:01:00.0/config", with: errno)
            #expect(probe.probe(cardFunction) == .lost(.readFailed(errno)))
        }
        bus.failReads(of: "bus/pci/devices/0000:01:00.0/config", with: .permissionDenied)
        #expect(!probe.probe(cardFunction).isLost)
        bus.sysfs.removeFunction("0000:01:00.1")
        #expect(probe.probe(PCIAddress("0000:01:00.1")!) == .lost(.removed))
    }
}
