// Moved: the block structs live in format/blocks.h (the format layer).
#pragma once
#include "format/blocks.h"
