#include "textflag.h"

// func pause(n uint32)
// Executes PAUSE n times: a polite busy-wait that tells the core a spin
// loop is running (and frees resources for a sibling hyperthread).
TEXT ·pause(SB),NOSPLIT,$0-4
	MOVL	n+0(FP), AX
	TESTL	AX, AX
	JZ	done
again:
	PAUSE
	DECL	AX
	JNZ	again
done:
	RET
