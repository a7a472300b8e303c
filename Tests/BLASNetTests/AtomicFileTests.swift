import Foundation
import Testing
@testable import BLASNet

/// What `AtomicFile` must not do to files around the one it replaces.
struct AtomicFileTests {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("blasnet-atomic-\(UUID().uuidString)")

    init() throws { try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true) }

    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    /// A replaced file keeps its permissions; a link planted at the temporary file's name
    /// is replaced, not written through.
    @Test func replacesOnlyTheFileItNames() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        try AtomicFile.write(Data("old".utf8), to: path("private.bin"))
        chmod(path("private.bin"), 0o600)
        try Data("victim".utf8).write(to: URL(fileURLWithPath: path("victim")))
        let planted = path(AtomicFile.temporaryName(for: "private.bin", pid: getpid()))
        #expect(symlink(path("victim"), planted) == 0)

        try AtomicFile.write(Data("new".utf8), to: path("private.bin"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: path("private.bin"))) == Data("new".utf8))
        #expect(try Data(contentsOf: URL(fileURLWithPath: path("victim"))) == Data("victim".utf8))
        var info = stat()
        #expect(stat(path("private.bin"), &info) == 0)
        #expect(info.st_mode & 0o777 == 0o600)
        #expect(!FileManager.default.fileExists(atPath: planted))
    }

    /// Only this program's temporaries, of writers on this machine that are gone, are removed.
    @Test func removesOnlyItsOwnAbandonedTemporaries() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        // pid_max is at most 2²², so no process has this pid.
        let gone = AtomicFile.temporaryName(for: "last.safetensors", pid: Int32.max)
        let live = AtomicFile.temporaryName(for: "best.safetensors", pid: getppid())
        let others = [".notes.tmp-2147483647", ".last.safetensors.blasnet-tmp.another-host.2147483647", live]
        for name in others + [gone] { try Data().write(to: URL(fileURLWithPath: path(name))) }
        AtomicFile.removeAbandonedTemporaries(in: dir.path)
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: dir.path)) == Set(others))
    }
}
