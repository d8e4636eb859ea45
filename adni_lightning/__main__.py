"""``python -m adni_lightning synth ...`` makes a synthetic cohort; anything else goes to the LightningCLI."""

import sys

from adni_lightning import main, synth

if len(sys.argv) > 1 and sys.argv[1] == "synth":
    synth.main(sys.argv[2:])
else:
    main.main()
