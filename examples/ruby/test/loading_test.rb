# frozen_string_literal: true

require "test_helper"
require "fileutils"
require "rbconfig"
require "tmpdir"

# How the binding finds libdflockd: the platform gem's own copy alone when it
# carries one; DFLOCKD_LIB alone when set; otherwise the
# SONAME libdflockd.so.0 through the system loader, then the repository's
# build/lib; never the unversioned dev link. make test-ruby also runs the
# suite against the installed gem (DFLOCKD_TEST_GEM=installed) with the
# installed library on LD_LIBRARY_PATH (DFLOCKD_TEST_LIB_DIR).
class LoadingTest < Minitest::Test
  include DFlockdTestHelper

  # The shared object this process mapped for libdflockd.
  def self.mapped_library(maps = File.read("/proc/self/maps"))
    maps.lines.map { |l| l.split[5] }.compact.find { |f| File.basename(f).start_with?("libdflockd") }
  end

  def test_search_order
    candidates = DFlockd::Native.library_candidates({})
    assert_equal "libdflockd.so.0", candidates.first, "the SONAME, through the system loader, comes first"
    assert_equal 2, candidates.size
    if LOADED_FROM.start_with?("#{REPO_LIB}/")
      assert_equal File.expand_path("../../../build/lib/libdflockd.so.0", REPO_LIB), candidates.last
    end
    candidates.each do |c|
      refute_equal "libdflockd.so", File.basename(c), "the unversioned dev link must never be loaded"
      assert_equal "libdflockd.so.0", File.basename(c)
    end
    assert_equal ["/x/libother.so"], DFlockd::Native.library_candidates({ "DFLOCKD_LIB" => "/x/libother.so" })
    assert_equal DFlockd::Native.library_candidates({}), DFlockd::Native.library_candidates({ "DFLOCKD_LIB" => "" })
  end

  # The platform gem (make gem) carries vendor/libdflockd.so.0: that copy alone, before
  # DFLOCKD_LIB and the system loader (make gem-check installs and runs the real gem).
  def test_bundled_library_comes_first
    refute File.file?(DFlockd::Native::BUNDLED), "the repository and the pure gem carry no library"
    Dir.mktmpdir do |dir|
      bundled = File.join(dir, "libdflockd.so.0")
      File.write(bundled, "")
      assert_equal [bundled], DFlockd::Native.library_candidates({ "DFLOCKD_LIB" => "/x/libother.so" }, bundled: bundled)
      assert_equal [bundled], DFlockd::Native.library_candidates({}, bundled: bundled)
    end
  end

  def test_loaded_library
    path = self.class.mapped_library
    refute_nil path, "libdflockd is not mapped"
    return if ENV["DFLOCKD_LIB"].to_s != ""

    assert_match(/\Alibdflockd\.so\.0(\.|\z)/, File.basename(path))
    if (dir = ENV["DFLOCKD_TEST_LIB_DIR"].to_s) != ""
      assert_equal "libdflockd.so.0", DFlockd::Native::LIBRARY, "not loaded through the system loader"
      assert_equal File.realpath(dir), File.dirname(File.realpath(path)), "loaded #{path}, not the installed library"
    end
  end

  def test_installed_gem
    skip "the suite runs from the repository (ruby -Ilib)" unless ENV["DFLOCKD_TEST_GEM"] == "installed"
    spec = Gem.loaded_specs["dflockd"]
    refute_nil spec, "dflockd was not activated as a gem"
    assert LOADED_FROM.start_with?("#{spec.full_gem_path}/"), "loaded #{LOADED_FROM}, not the installed gem"
    refute LOADED_FROM.start_with?("#{REPO_LIB}/")
    assert_equal DFlockd.version, spec.version.to_s, "the gem's version is the library's"
  end

  # DFLOCKD_LIB wins over everything, and a wrong one fails instead of
  # falling back.
  def test_dflockd_lib_is_honoured
    Dir.mktmpdir do |dir|
      copy = File.join(dir, "libdflockd-from-env.so")
      FileUtils.cp(File.realpath(self.class.mapped_library), copy)
      probe = 'print DFlockd::Native::LIBRARY, "|", DFlockd.version, "|", ' \
              'File.read("/proc/self/maps").lines.map { |l| l.split[5] }.compact.grep(/libdflockd/).uniq.join(",")'
      out, status = run_bounded([RbConfig.ruby, "-w", *LOAD_ARGS, "-rdflockd", "-e", probe], 30, "DFLOCKD_LIB" => copy)
      assert status.success?, out
      lib, version, mapped = out.split("|")
      assert_equal copy, lib
      assert_equal DFlockd.version, version
      assert_equal copy, mapped, "only the DFLOCKD_LIB library is mapped"

      missing = File.join(dir, "missing.so")
      out, status = run_bounded([RbConfig.ruby, *LOAD_ARGS, "-rdflockd", "-e", "print :loaded"], 30,
                                "DFLOCKD_LIB" => missing)
      refute status.success?, "a missing DFLOCKD_LIB must not fall back: #{out}"
      assert_includes out, missing
      assert_includes out, "LoadError"
    end
  end
end
