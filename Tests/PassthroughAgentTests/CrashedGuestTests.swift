import PassthroughAgent
import PassthroughCore
import PassthroughLibvirt
import PassthroughTestSupport
import Testing

private let f0 = PCIAddress("0000:01:00.0")!
private let f1 = PCIAddress("0000:01:00.1")!

/// With `on_crash=preserve` libvirt keeps a crashed guest's QEMU, which keeps the card. Giving the card back
/// to the host then would leave the unbind waiting in the kernel for a QEMU that never lets go.
@Suite("A crashed guest keeps its card")
struct CrashedGuestTests {
    @Test("crashed: the card stays on vfio-pci in the kept QEMU, and the status says why; destroyed: given back")
    func crashedThenDestroyed() async throws {
        let fixture = try await DaemonFixture.make(guest: .running)
        await fixture.pass()
        #expect(fixture.driver("0000:01:00.0") == "vfio-pci")

        await fixture.hypervisor.define("fpga-dev", state: .crashed)
        await fixture.supervisor.handle(.lifecycle(guest: "fpga-dev", .crashed))
        await fixture.supervisor.pass()
        #expect(fixture.driver("0000:01:00.0") == "vfio-pci")
        #expect(fixture.driver("0000:01:00.1") == "vfio-pci")
        #expect(fixture.notifications(.cardGivenBack).isEmpty)
        #expect(await fixture.hypervisor.liveHostdevs(of: "fpga-dev") == [f0, f1])
        #expect(await fixture.supervisor.summary == "u200: left where it is, fpga-dev crashed and still holds it")

        await fixture.hypervisor.define("fpga-dev", state: .shutOff)
        await fixture.supervisor.handle(.lifecycle(guest: "fpga-dev", .stopped(.destroyed)))
        await fixture.supervisor.pass()
        #expect(fixture.driver("0000:01:00.0") == "xdma")
        #expect(await fixture.supervisor.summary == "u200: on the host")
    }

    @Test("plan: no step for a crashed guest's card, and a note saying what releases it")
    func planForACrashedGuest() async throws {
        let fixture = try await DaemonFixture.make(guest: .running)
        await fixture.pass()
        await fixture.hypervisor.define("fpga-dev", state: .crashed)
        let plan = try await PlanPreview.compute(config: fixture.config, host: fixture.bus.host, hypervisor: fixture.hypervisor)
        #expect(plan.steps.isEmpty)
        #expect(plan.notes.contains { $0.contains("fpga-dev crashed and its QEMU still holds the card") && $0.contains("virsh destroy fpga-dev") })
    }

    @Test("a guest state this agent does not know: hands off, and the plan says why")
    func unknownState() async throws {
        let fixture = try await DaemonFixture.make(guest: .running)
        await fixture.pass()
        await fixture.hypervisor.define("fpga-dev", state: .other(9))
        let plan = try await PlanPreview.compute(config: fixture.config, host: fixture.bus.host, hypervisor: fixture.hypervisor)
        #expect(plan.steps.isEmpty)
        #expect(plan.notes.contains { $0.contains("a state this agent does not know") })
        await fixture.pass()
        #expect(fixture.driver("0000:01:00.0") == "vfio-pci")
    }
}
