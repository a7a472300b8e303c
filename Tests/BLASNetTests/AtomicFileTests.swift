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

    /// Written through a chain of symbolic links (relative and absolute), the file at its
    /// end is replaced and the links stay links; a dangling link gets its file; a loop is an error.
    @Test func writesThroughSymbolicLinksAndKeepsThem() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let storage = dir.appendingPathComponent("storage")
        try FileManager.default.createDirectory(at: storage, withIntermediateDirectories: true)
        let real = storage.appendingPathComponent("best.safetensors").path
        try AtomicFile.write(Data("old".utf8), to: real)
        chmod(real, 0o600)
        #expect(symlink(real, path("hop")) == 0)
        #expect(symlink("hop", path("best.safetensors")) == 0)

        try AtomicFile.write(Data("new".utf8), to: path("best.safetensors"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: real)) == Data("new".utf8))
        for link in ["hop", "best.safetensors"] {
            #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: path(link))) != nil)
        }
        var info = stat()
        #expect(stat(real, &info) == 0 && info.st_mode & 0o777 == 0o600)

        #expect(symlink("storage/last.safetensors", path("last.safetensors")) == 0)
        try AtomicFile.write(Data("first".utf8), to: path("last.safetensors"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: storage.appendingPathComponent("last.safetensors").path)) == Data("first".utf8))
        #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: path("last.safetensors"))) == "storage/last.safetensors")

        #expect(symlink(path("b"), path("a")) == 0 && symlink(path("a"), path("b")) == 0)
        let loop = #expect(throws: BLASNetError.self) { try AtomicFile.write(Data(), to: path("a")) }
        #expect(loop.map { "\($0)" }?.contains("symbolic links") == true)
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: dir.path)) == ["storage", "hop", "best.safetensors", "last.safetensors", "a", "b"])
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
