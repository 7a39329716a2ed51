import PassthroughAgent

/// `control`: the control socket's request decoder; each input is one request line as a
/// client (any local root process) may send it, without its newline.
///
/// An accepted request must be the one its own wire form decodes to: the client and the daemon agree.
@_cdecl("passthrough_fuzz_control")
public func fuzzControl(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    switch ControlRequest.parse(UnsafeBufferPointer(start: data, count: size)) {
    case .success(let request):
        let line = request.line
        guard line.last == 0x0A, case .success(let again) = ControlRequest.parse(line.dropLast()), again == request else {
            fatalError("\(request) is sent as \(String(decoding: line, as: UTF8.self)), which does not read back as itself")
        }
    case .failure(let error):
        _ = error.description
    }
    return 0
}
