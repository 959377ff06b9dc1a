# frozen_string_literal: true

require "test_helper"
require "rbconfig"

# Every script in examples/ runs as a test: it exits non-zero when what it
# shows did not happen, and prints the line checked here.
class ExamplesTest < Minitest::Test
  include DFlockdTestHelper

  EXAMPLES = {
    "lock" => "released",
    "semaphore" => "all 6 workers done",
    "two_phase" => "waiter: granted",
    "tls_auth" => "acquired over TLS with auth",
    "lost_lease" => "lease lost: stopping work; held? = false"
  }.freeze

  EXAMPLES.each do |name, want|
    define_method("test_example_#{name}") do
      dir = File.expand_path("..", __dir__)
      script = File.join(dir, "examples", "#{name}.rb")
      out, status = run_bounded([RbConfig.ruby, "-w", *LOAD_ARGS, script], 60)
      assert status.success?, "#{name} failed (#{status.inspect}):\n#{out}"
      assert_includes out, want, "#{name} output:\n#{out}"
    end
  end
end
