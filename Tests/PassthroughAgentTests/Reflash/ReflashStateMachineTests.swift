import PassthroughAgent
import PassthroughCore
import Testing

private typealias Machine = ReflashStateMachine
private typealias Sighting = ReflashStateMachine.Sighting

private let site = ReflashSite(slot: PCISlot("0000:01:00")!, upstreamPort: PCIAddress("0000:00:01.0")!,
                               functions: [PCIAddress("0000:01:00.0")!, PCIAddress("0000:01:00.1")!])
private let saved = GuardRecord(port: PCIAddress("0000:00:01.0")!, command: 0x0547, deviceControl: 0x2937)

/// On the bus now.
private let onBus = Sighting(present: site, last: site)
/// Off the bus, last seen at `site`.
private let offBus = Sighting(present: nil, last: site)
/// Never seen since the agent started.
private let neverSeen = Sighting(present: nil, last: nil)

/// Every state a card can be in, with and without the guard engaged.
private let everyState: [ReflashState] = [
    .placed,
    .takingOff(site, guard: nil), .takingOff(site, guard: saved),
    .held(site, guard: nil), .held(site, guard: saved),
    .bringingBack(site, guard: nil), .bringingBack(site, guard: saved),
    .recovering(site, generation: 3, guard: nil), .recovering(site, generation: 3, guard: saved),
    .gaveUp(site),
]

/// One row of a table: a state, what goes in, what must come out and where the card stands after.
private struct Row<Input: Sendable, Action: Hashable & Sendable>: Sendable, CustomTestStringConvertible {
    var state: ReflashState
    var input: Input
    var action: Action
    var next: ReflashState
    var testDescription: String { "\(state) + \(input) → \(action), \(next)" }
}

private struct Request: Sendable, CustomStringConvertible {
    var sighting: Sighting
    var dryRun = false
    var description: String {
        let where_ = sighting.present != nil ? "on the bus" : sighting.last != nil ? "off the bus" : "never seen"
        return dryRun ? "\(where_), dry run" : where_
    }
}

private func request(_ sighting: Sighting, dryRun: Bool = false) -> Request { Request(sighting: sighting, dryRun: dryRun) }

@Suite("Reflash state machine")
struct ReflashStateMachineTests {
    // MARK: reflash --prepare

    @Test("--prepare: only a placed (or given-up) card on the bus is taken off; dry run and busy states refuse, held answers held",
          arguments: [
              Row(state: .placed, input: request(onBus), action: Machine.PrepareAction.takeOff(site), next: .takingOff(site, guard: nil)),
              Row(state: .placed, input: request(offBus), action: .refuse(.notOnBus), next: .placed),
              Row(state: .placed, input: request(neverSeen), action: .refuse(.notOnBus), next: .placed),
              Row(state: .placed, input: request(onBus, dryRun: true), action: .refuse(.dryRun), next: .placed),
              Row(state: .gaveUp(site), input: request(onBus), action: .takeOff(site), next: .takingOff(site, guard: nil)),
              Row(state: .gaveUp(site), input: request(offBus), action: .refuse(.notOnBus), next: .gaveUp(site)),
              Row(state: .held(site, guard: saved), input: request(offBus), action: .alreadyHeld(site), next: .held(site, guard: saved)),
              Row(state: .held(site, guard: saved), input: request(offBus, dryRun: true), action: .refuse(.dryRun),
                  next: .held(site, guard: saved)),
              Row(state: .takingOff(site, guard: saved), input: request(onBus), action: .refuse(.busy("being taken off the bus")),
                  next: .takingOff(site, guard: saved)),
              Row(state: .bringingBack(site, guard: nil), input: request(offBus), action: .refuse(.busy("being brought back")),
                  next: .bringingBack(site, guard: nil)),
              Row(state: .recovering(site, generation: 3, guard: nil), input: request(onBus), action: .refuse(.busy("being recovered")),
                  next: .recovering(site, generation: 3, guard: nil)),
          ])
    fileprivate func prepare(_ row: Row<Request, Machine.PrepareAction>) {
        var machine = Machine(resuming: row.state)
        #expect(machine.prepare(row.input.sighting, dryRun: row.input.dryRun) == row.action)
        #expect(machine.state == row.next)
    }

    @Test("a take-off: the saved guard is kept with the state; done, it is held with it; abandoned, the card is the loop's again")
    func takeOff() {
        var machine = Machine()
        _ = machine.prepare(onBus, dryRun: false)
        machine.guardSaved(saved)
        #expect(machine.state == .takingOff(site, guard: saved))
        var abandoned = machine
        abandoned.takeOffAbandoned()
        #expect(abandoned.state == .placed)
        machine.takenOff()
        #expect(machine.state == .held(site, guard: saved))
        // Outcomes of a take-off mean nothing in any other state.
        machine.takeOffAbandoned()
        #expect(machine.state == .held(site, guard: saved))
        for state in everyState {
            if case .takingOff = state { continue }
            var other = Machine(resuming: state)
            other.takenOff()
            other.takeOffAbandoned()
            #expect(other.state == state)
        }
    }

    @Test("guardSaved records the registers while taking off or recovering, and nowhere else", arguments: everyState)
    func guardSaved(_ state: ReflashState) {
        var machine = Machine(resuming: state)
        machine.guardSaved(saved)
        switch state {
        case .takingOff(let site, _): #expect(machine.state == .takingOff(site, guard: saved))
        case .recovering(let site, let generation, _): #expect(machine.state == .recovering(site, generation: generation, guard: saved))
        default: #expect(machine.state == state)
        }
    }

    // MARK: reflash --finish

    @Test("--finish: a held card, or an absent one, is brought back; a card on the bus is in use; dry run and busy states refuse",
          arguments: [
              Row(state: .held(site, guard: saved), input: request(offBus), action: Machine.FinishAction.bringBack(site),
                  next: .bringingBack(site, guard: saved)),
              Row(state: .held(site, guard: nil), input: request(offBus), action: .bringBack(site), next: .bringingBack(site, guard: nil)),
              Row(state: .held(site, guard: saved), input: request(offBus, dryRun: true), action: .refuse(.dryRun),
                  next: .held(site, guard: saved)),
              // --finish without --prepare on a card a guest may be using: never a rescan or a reset under it.
              Row(state: .placed, input: request(onBus), action: .refuse(.inUse), next: .placed),
              Row(state: .placed, input: request(onBus, dryRun: true), action: .refuse(.dryRun), next: .placed),
              // Absent (its recovery gave up, or it fell off while the agent was down): a rescan is what it needs.
              Row(state: .placed, input: request(offBus), action: .bringBack(site), next: .bringingBack(site, guard: nil)),
              Row(state: .placed, input: request(neverSeen), action: .refuse(.notOnBus), next: .placed),
              Row(state: .gaveUp(site), input: request(neverSeen), action: .bringBack(site), next: .bringingBack(site, guard: nil)),
              Row(state: .gaveUp(site), input: request(onBus), action: .refuse(.inUse), next: .gaveUp(site)),
              Row(state: .takingOff(site, guard: nil), input: request(onBus), action: .refuse(.busy("being taken off the bus")),
                  next: .takingOff(site, guard: nil)),
              Row(state: .bringingBack(site, guard: saved), input: request(offBus), action: .refuse(.busy("already being brought back")),
                  next: .bringingBack(site, guard: saved)),
              Row(state: .recovering(site, generation: 3, guard: saved), input: request(offBus), action: .refuse(.busy("being recovered")),
                  next: .recovering(site, generation: 3, guard: saved)),
          ])
    fileprivate func finish(_ row: Row<Request, Machine.FinishAction>) {
        var machine = Machine(resuming: row.state)
        #expect(machine.finish(row.input.sighting, dryRun: row.input.dryRun) == row.action)
        #expect(machine.state == row.next)
    }

    @Test("a bring-back ends placed when the card is back, else held again (with the guard unless it was released)",
          arguments: [
              Row(state: .bringingBack(site, guard: saved), input: (back: true, released: true), action: true, next: .placed),
              Row(state: .bringingBack(site, guard: saved), input: (back: true, released: false), action: true, next: .placed),
              Row(state: .bringingBack(site, guard: saved), input: (back: false, released: false), action: true,
                  next: .held(site, guard: saved)),
              Row(state: .bringingBack(site, guard: saved), input: (back: false, released: true), action: true,
                  next: .held(site, guard: nil)),
              Row(state: .held(site, guard: saved), input: (back: true, released: true), action: false, next: .held(site, guard: saved)),
              Row(state: .placed, input: (back: false, released: false), action: false, next: .placed),
          ])
    fileprivate func bringBackEnded(_ row: Row<(back: Bool, released: Bool), Bool>) {
        var machine = Machine(resuming: row.state)
        machine.bringBackEnded(back: row.input.back, guardReleased: row.input.released)
        #expect(machine.state == row.next)
    }

    // MARK: Lost

    @Test("a loss starts a recovery only from placed, with a new generation; anything under way means it is the same loss",
          arguments: [
              Row(state: .placed, input: request(onBus), action: Machine.LossAction.recover(site, generation: 1),
                  next: .recovering(site, generation: 1, guard: nil)),
              // Gone from sysfs already (pciehp removed it): recovered where it was last seen.
              Row(state: .placed, input: request(offBus), action: .recover(site, generation: 1),
                  next: .recovering(site, generation: 1, guard: nil)),
              Row(state: .placed, input: request(neverSeen), action: .ignore("its place on the bus is not known"), next: .placed),
              Row(state: .placed, input: request(onBus, dryRun: true), action: .ignore("dry run: not recovering"), next: .placed),
          ] + everyState.filter { $0 != .placed }.map { state in
              Row(state: state, input: request(onBus), action: .ignore("a reflash or recovery is already under way"), next: state)
          })
    fileprivate func lost(_ row: Row<Request, Machine.LossAction>) {
        var machine = Machine(resuming: row.state)
        let generation = machine.generation
        #expect(machine.lost(row.input.sighting, dryRun: row.input.dryRun) == row.action)
        #expect(machine.state == row.next)
        if case .recover(_, let started) = row.action {
            #expect(machine.generation == started)
        } else {
            #expect(machine.generation == generation)
        }
    }

    @Test("generations: a grace probe started before a loss is stale once it was recovered, and after a restart too")
    func generations() {
        var machine = Machine()
        #expect(machine.isCurrent(0))
        #expect(machine.lost(onBus, dryRun: false) == .recover(site, generation: 1))
        #expect(!machine.isCurrent(0))
        #expect(!machine.isCurrent(1))   // recovering: no probe may report a loss
        machine.recoveryEnded(generation: 1, .back, guardReleased: true)
        #expect(machine.state == .placed)
        #expect(!machine.isCurrent(0))
        #expect(machine.isCurrent(1))
        #expect(machine.lost(onBus, dryRun: false) == .recover(site, generation: 2))

        // A restart resumes the generation it persisted: the next loss is a new one, never a reused number.
        var resumed = Machine(resuming: .recovering(site, generation: 7, guard: saved))
        #expect(resumed.generation == 7)
        resumed.recoveryEnded(generation: 7, .back, guardReleased: true)
        #expect(resumed.lost(offBus, dryRun: false) == .recover(site, generation: 8))
        #expect(Machine(resuming: .held(site, guard: saved)).generation == 0)
    }

    @Test("a recovery's outcome: back or failed → placed, timed out → gave up, interrupted → still recovering (resumed at the next start); a stale one changes nothing",
          arguments: [
              Row(state: .recovering(site, generation: 3, guard: saved), input: (generation: 3, result: Machine.RecoveryResult.back, released: true),
                  action: true, next: .placed),
              Row(state: .recovering(site, generation: 3, guard: saved), input: (generation: 3, result: .failed, released: false),
                  action: true, next: .placed),
              Row(state: .recovering(site, generation: 3, guard: saved), input: (generation: 3, result: .timedOut, released: true),
                  action: true, next: .gaveUp(site)),
              Row(state: .recovering(site, generation: 3, guard: saved), input: (generation: 3, result: .interrupted, released: false),
                  action: true, next: .recovering(site, generation: 3, guard: saved)),
              Row(state: .recovering(site, generation: 3, guard: saved), input: (generation: 3, result: .interrupted, released: true),
                  action: true, next: .recovering(site, generation: 3, guard: nil)),
              Row(state: .recovering(site, generation: 3, guard: saved), input: (generation: 2, result: .back, released: true),
                  action: false, next: .recovering(site, generation: 3, guard: saved)),
              Row(state: .held(site, guard: saved), input: (generation: 0, result: .back, released: true),
                  action: false, next: .held(site, guard: saved)),
              Row(state: .placed, input: (generation: 0, result: .timedOut, released: false), action: false, next: .placed),
          ])
    fileprivate func recoveryEnded(_ row: Row<(generation: Int, result: Machine.RecoveryResult, released: Bool), Bool>) {
        var machine = Machine(resuming: row.state)
        machine.recoveryEnded(generation: row.input.generation, row.input.result, guardReleased: row.input.released)
        #expect(machine.state == row.next)
    }

    // MARK: Seen, forgotten

    @Test("seen on the bus: a held card's reflash is over (its guard released), a given-up card is placed again; moves in flight go on",
          arguments: [
              Row(state: .held(site, guard: saved), input: request(onBus), action: Machine.SightingAction.releaseGuard(saved), next: .placed),
              Row(state: .held(site, guard: nil), input: request(onBus), action: .none, next: .placed),
              Row(state: .held(site, guard: saved), input: request(offBus), action: .none, next: .held(site, guard: saved)),
              Row(state: .gaveUp(site), input: request(onBus), action: .none, next: .placed),
              Row(state: .gaveUp(site), input: request(offBus), action: .none, next: .gaveUp(site)),
              Row(state: .placed, input: request(onBus), action: .none, next: .placed),
              Row(state: .takingOff(site, guard: saved), input: request(onBus), action: .none, next: .takingOff(site, guard: saved)),
              Row(state: .bringingBack(site, guard: saved), input: request(onBus), action: .none, next: .bringingBack(site, guard: saved)),
              Row(state: .recovering(site, generation: 3, guard: saved), input: request(onBus), action: .none,
                  next: .recovering(site, generation: 3, guard: saved)),
          ])
    fileprivate func seen(_ row: Row<Request, Machine.SightingAction>) {
        var machine = Machine(resuming: row.state)
        #expect(machine.seen(row.input.sighting) == row.action)
        #expect(machine.state == row.next)
    }

    @Test("forget: placed again, and the guard engaged in any state comes out to be released", arguments: everyState)
    func forget(_ state: ReflashState) {
        var machine = Machine(resuming: state)
        #expect(machine.forget() == state.guardRecord)
        #expect(machine.state == .placed)
    }

    // MARK: What each state means

    @Test("persisted: a take-off or bring-back in flight is resumed as held with its guard; every other state as it is",
          arguments: zip(everyState, [
              ReflashState.placed,
              .held(site, guard: nil), .held(site, guard: saved),
              .held(site, guard: nil), .held(site, guard: saved),
              .held(site, guard: nil), .held(site, guard: saved),
              .recovering(site, generation: 3, guard: nil), .recovering(site, generation: 3, guard: saved),
              .gaveUp(site),
          ]))
    func persisted(_ state: ReflashState, _ resumed: ReflashState) {
        #expect(state.persisted == resumed)
        #expect(state.persisted.guardRecord == state.guardRecord)
    }

    @Test("who owns the card: the loop, except while a move is under way; whose absence is expected",
          arguments: zip(everyState, [
              (false, false),
              (true, true), (true, true),
              (false, true), (false, true),
              (true, true), (true, true),
              (true, true), (true, true),
              (false, false),
          ]))
    func ownership(_ state: ReflashState, _ expected: (Bool, Bool)) {
        #expect(state.excludesReconcile == expected.0)
        #expect(state.expectsAbsence == expected.1)
    }

    @Test("the guard record and the site of each state", arguments: everyState)
    func record(_ state: ReflashState) {
        switch state {
        case .placed:
            #expect(state.site == nil && state.guardRecord == nil)
        case .gaveUp:
            #expect(state.site == site && state.guardRecord == nil)
        case .takingOff(_, let record), .held(_, let record), .bringingBack(_, let record), .recovering(_, _, let record):
            #expect(state.site == site && state.guardRecord == record)
        }
    }

    // MARK: while-lent

    fileprivate struct Lending: Sendable, CustomTestStringConvertible {
        var state: ReflashState = .placed
        var held: GuardRecord?
        var lent: Bool?
        var mode: ReflashGuardMode = .whileLent
        var action: Machine.LendAction
        var testDescription: String { "\(state), held \(held != nil), lent \(lent.map(String.init) ?? "unknown"), \(mode) → \(action)" }
    }

    private static let lentRecord = GuardRecord(port: PCIAddress("0000:00:01.0")!, command: 0x0547, deviceControl: 0x2937, mode: .whileLent)

    @Test("while-lent: engaged once the card is in its guest, re-asserted while it stays, released once it is home or the mode changes; unknown changes nothing, and a reflash or recovery owns the port meanwhile",
          arguments: [
              Lending(lent: true, action: .engage),
              Lending(lent: false, action: .none),
              Lending(lent: nil, action: .none),
              Lending(lent: true, mode: .mask, action: .none),
              Lending(lent: true, mode: .off, action: .none),
              Lending(held: lentRecord, lent: true, action: .reassert(lentRecord)),
              Lending(held: lentRecord, lent: nil, action: .none),
              Lending(held: lentRecord, lent: false, action: .release(lentRecord)),
              Lending(held: lentRecord, lent: true, mode: .mask, action: .release(lentRecord)),
              Lending(held: lentRecord, lent: nil, mode: .off, action: .release(lentRecord)),
              Lending(state: .held(site, guard: nil), held: lentRecord, lent: false, action: .none),
              Lending(state: .recovering(site, generation: 1, guard: nil), held: lentRecord, lent: false, action: .none),
              Lending(state: .held(site, guard: saved), lent: true, action: .none),
              Lending(state: .gaveUp(site), lent: true, action: .none),
          ])
    fileprivate func lending(_ row: Lending) {
        let machine = Machine(resuming: row.state, lentGuard: row.held)
        #expect(machine.lending(lent: row.lent, mode: row.mode) == row.action)
    }

    @Test("a lent guard is kept through a reflash of the card (which guards nothing itself) and comes out of forget")
    func lentAcrossReflash() {
        var machine = Machine()
        machine.lentGuardSaved(Self.lentRecord)
        #expect(machine.lentGuard == Self.lentRecord)
        #expect(machine.prepare(onBus, dryRun: false) == .takeOff(site))
        machine.takenOff()
        #expect(machine.state == .held(site, guard: nil))
        #expect(machine.finish(offBus, dryRun: false) == .bringBack(site))
        machine.bringBackEnded(back: true, guardReleased: true)
        #expect(machine.state == .placed)
        #expect(machine.lentGuard == Self.lentRecord)
        // Saved again while held: the first (original) registers stay.
        machine.lentGuardSaved(GuardRecord(port: PCIAddress("0000:00:01.0")!, command: 0x0447, deviceControl: 0x2933, mode: .whileLent))
        #expect(machine.lentGuard == Self.lentRecord)
        #expect(machine.forget() == Self.lentRecord)
        #expect(machine.lentGuard == nil)
    }
}
