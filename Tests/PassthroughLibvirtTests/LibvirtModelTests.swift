import CLibvirt
@testable import PassthroughLibvirt
import Testing

@Suite struct LibvirtModelTests {
    private func raw(_ value: UInt32) -> Int32 { Int32(bitPattern: value) }

    @Test func lifecycleEventsDecodeWithTheirStopReason() {
        let stopped = raw(VIR_DOMAIN_EVENT_STOPPED.rawValue)
        #expect(LifecycleEvent(event: stopped, detail: raw(VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN.rawValue)) == .stopped(.shutdown))
        #expect(LifecycleEvent(event: stopped, detail: raw(VIR_DOMAIN_EVENT_STOPPED_DESTROYED.rawValue)) == .stopped(.destroyed))
        #expect(LifecycleEvent(event: stopped, detail: raw(VIR_DOMAIN_EVENT_STOPPED_CRASHED.rawValue)) == .stopped(.crashed))
        #expect(LifecycleEvent(event: stopped, detail: raw(VIR_DOMAIN_EVENT_STOPPED_MIGRATED.rawValue)) == .stopped(.migrated))
        #expect(LifecycleEvent(event: stopped, detail: raw(VIR_DOMAIN_EVENT_STOPPED_SAVED.rawValue)) == .stopped(.saved))
        #expect(LifecycleEvent(event: stopped, detail: raw(VIR_DOMAIN_EVENT_STOPPED_FAILED.rawValue)) == .stopped(.failed))
        #expect(LifecycleEvent(event: stopped, detail: 99) == .stopped(.other(99)))
    }

    @Test func everyLifecycleEventTypeHasACase() {
        let expected: [(UInt32, LifecycleEvent)] = [
            (VIR_DOMAIN_EVENT_DEFINED.rawValue, .defined), (VIR_DOMAIN_EVENT_UNDEFINED.rawValue, .undefined),
            (VIR_DOMAIN_EVENT_STARTED.rawValue, .started), (VIR_DOMAIN_EVENT_SUSPENDED.rawValue, .suspended),
            (VIR_DOMAIN_EVENT_RESUMED.rawValue, .resumed), (VIR_DOMAIN_EVENT_SHUTDOWN.rawValue, .shutdown),
            (VIR_DOMAIN_EVENT_PMSUSPENDED.rawValue, .pmSuspended), (VIR_DOMAIN_EVENT_CRASHED.rawValue, .crashed),
        ]
        for (event, decoded) in expected {
            #expect(LifecycleEvent(event: raw(event), detail: 0) == decoded)
        }
        #expect(LifecycleEvent(event: 42, detail: 7) == .other(event: 42, detail: 7))
    }

    @Test func eventsNameTheirGuest() {
        #expect(HypervisorEvent.lifecycle(guest: "a", .started).guest == "a")
        #expect(HypervisorEvent.deviceRemoved(guest: "b", alias: "hostdev0").guest == "b")
        #expect(HypervisorEvent.deviceRemovalFailed(guest: "c", alias: "hostdev0").guest == "c")
        #expect(HypervisorEvent.deviceAdded(guest: "d", alias: "hostdev0").guest == "d")
        #expect(HypervisorEvent.resync.guest == nil)
        #expect(HypervisorEvent.disconnected(reason: "x").guest == nil)
    }

    @Test func guestStatesDecode() {
        #expect(GuestState(libvirtState: raw(VIR_DOMAIN_RUNNING.rawValue)) == .running)
        #expect(GuestState(libvirtState: raw(VIR_DOMAIN_PAUSED.rawValue)) == .paused)
        #expect(GuestState(libvirtState: raw(VIR_DOMAIN_SHUTOFF.rawValue)) == .shutOff)
        #expect(GuestState(libvirtState: raw(VIR_DOMAIN_CRASHED.rawValue)) == .crashed)
        #expect(GuestState(libvirtState: 77) == .other(77))
        #expect(GuestState.running.isActive && GuestState.paused.isActive)
        #expect(!GuestState.shutOff.isActive && !GuestState.absent.isActive)
    }

    /// A crashed guest kept by on_crash=preserve still has its QEMU, and with it the card: it takes no live
    /// detach (not active), but nothing may be taken from it either.
    @Test("who may still hold devices: every state with a QEMU, crashed included, and states not understood",
          arguments: [
              (GuestState.running, true, true), (.blocked, true, true), (.paused, true, true),
              (.shuttingDown, true, true), (.pmSuspended, true, true),
              (.crashed, false, true), (.noState, false, true), (.other(77), false, true),
              (.shutOff, false, false), (.absent, false, false),
          ] as [(GuestState, Bool, Bool)])
    func whoMayHoldDevices(state: GuestState, active: Bool, mayHold: Bool) {
        #expect(state.isActive == active)
        #expect(state.mayHoldDevices == mayHold)
    }

    @Test func errorHelpersMatchLibvirtCodes() {
        func error(_ code: virErrorNumber) -> LibvirtError {
            LibvirtError(code: raw(code.rawValue), domain: 0, message: "m", operation: "op")
        }
        #expect(error(VIR_ERR_NO_SUPPORT).isNotSupported)
        #expect(error(VIR_ERR_NO_DOMAIN).isNoDomain)
        #expect(error(VIR_ERR_OPERATION_INVALID).isOperationInvalid)
        #expect(error(VIR_ERR_NO_CONNECT).isConnectionLost)
        #expect(!error(VIR_ERR_NO_DOMAIN).isNotSupported)
        #expect(error(VIR_ERR_NO_DOMAIN).description == "op: m (libvirt code 42, domain 0)")
    }
}
