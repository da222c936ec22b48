import sys

from ssseg.cli import main

sys.exit(main())
