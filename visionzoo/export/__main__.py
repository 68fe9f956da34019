"""python -m visionzoo.export"""
import sys

from visionzoo.export import main

sys.exit(main())
