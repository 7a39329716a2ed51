import CLibvirt
@testable import PassthroughLibvirt
import Testing

/// The C callbacks, called directly as libvirt would, without a connection.
@Suite struct CallbackPlumbingTests {
    /// Fires callbacks at a fresh sink holding one registration's reference, then drains what they yielded.
    private func collect(_ fire: (UnsafeMutableRawPointer) -> Void) async -> [SessionSignal] {
        let (stream, continuation) = AsyncStream.makeStream(of: SessionSignal.self, bufferingPolicy: .unbounded)
        let opaque = SignalSink(continuation).retainedOpaque()
        fire(opaque)
        releaseSignalSink(opaque)
        continuation.finish()
        var signals: [SessionSignal] = []
        for await signal in stream { signals.append(signal) }
        return signals
    }

    @Test func closeCallbackYieldsClosedWithAReadableReason() async {
        let signals = await collect { connectionClosedCallback(nil, Int32(VIR_CONNECT_CLOSE_REASON_KEEPALIVE.rawValue), $0) }
        #expect(signals == [.closed(reason: "libvirtd stopped answering keepalives")])
    }

    @Test func deviceCallbacksYieldTheirAlias() async {
        let signals = await collect { opaque in
            "hostdev0".withCString { alias in
                deviceRemovedCallback(nil, nil, alias, opaque)
                deviceRemovalFailedCallback(nil, nil, alias, opaque)
                deviceAddedCallback(nil, nil, alias, opaque)
            }
        }
        #expect(signals == [
            .event(.deviceRemoved(guest: "", alias: "hostdev0")),
            .event(.deviceRemovalFailed(guest: "", alias: "hostdev0")),
            .event(.deviceAdded(guest: "", alias: "hostdev0")),
        ])
    }

    @Test func lifecycleCallbackDecodesEventAndDetail() async {
        let signals = await collect { opaque in
            _ = lifecycleCallback(
                nil, nil, Int32(VIR_DOMAIN_EVENT_STOPPED.rawValue), Int32(VIR_DOMAIN_EVENT_STOPPED_CRASHED.rawValue),
                opaque)
        }
        #expect(signals == [.event(.lifecycle(guest: "", .stopped(.crashed)))])
    }

    @Test func theFreeCallbackReleasesExactlyTheRegistrationsReference() {
        let (_, continuation) = AsyncStream.makeStream(of: SessionSignal.self)
        var sink: SignalSink? = SignalSink(continuation)
        weak let observed = sink
        let opaque = sink!.retainedOpaque()
        sink = nil
        #expect(observed != nil, "libvirt's reference keeps the sink alive for late callbacks")
        releaseSignalSink(opaque)
        #expect(observed == nil)
    }
}
