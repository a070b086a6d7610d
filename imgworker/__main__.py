import sys

from imgworker.commands.cli import main

sys.exit(main())
